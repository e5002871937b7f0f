//! `orchestrate keyscan`: fetch the SSH host keys of the selected hosts, in
//! parallel, record the new ones, and say which were new, unchanged or
//! changed, so the operator reviews only what moved.

use super::args::KeyscanArgs;
use super::output;
use super::{EXIT_INVALID, report_input_errors};
use crate::load::load_inventory;
use crate::plan::{MissingSecrets, PlanOptions, Selection, targets};
use crate::report::terminal::inert;
use crate::transport::TransportKind;
use crate::transport::ssh::{KeyscanStatus, keyscan as scan};

pub fn keyscan(args: &KeyscanArgs) -> i32 {
    let inventory = match load_inventory(&args.inventory) {
        Ok(i) => i,
        Err(errors) => return report_input_errors(&errors),
    };
    let options = PlanOptions {
        selection: Selection {
            clients: args.selection.clients.clone(),
            limit: args.selection.limit.clone(),
        },
        missing_secrets: MissingSecrets::Fail,
        host_key_policy: args.host_key_policy.into(),
    };
    let all = match targets(&inventory, &options) {
        Ok(t) => t,
        Err(errors) => return report_input_errors(&errors),
    };
    let (ssh, other): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|t| t.kind == TransportKind::Ssh);
    if ssh.is_empty() {
        eprintln!("error: no selected host is reached over ssh; keyscan has nothing to do");
        return EXIT_INVALID;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let outcomes = runtime.block_on(scan(&ssh, args.forks as usize));
    let (mut new, mut same, mut changed, mut down) = (0, 0, 0, 0);
    for outcome in &outcomes {
        let key = inert(outcome.key_type.as_deref().unwrap_or(""));
        // The name is the inventory's, the key type the host's: both inert.
        let host = inert(&outcome.host);
        match &outcome.status {
            KeyscanStatus::New {
                fingerprint,
                recorded,
            } => {
                new += 1;
                let note = match recorded {
                    Ok(()) => "recorded".to_string(),
                    Err(e) => format!("not recorded: {e}"),
                };
                output::println(&format!(
                    "new        {host} {key} {fingerprint} ({})",
                    inert(&note)
                ));
            }
            KeyscanStatus::Unchanged { fingerprint } => {
                same += 1;
                output::println(&format!("unchanged  {host} {key} {fingerprint}"));
            }
            KeyscanStatus::Changed { presented, known } => {
                changed += 1;
                output::println(&format!(
                    "CHANGED    {host} {key} presents {presented}, known as {known}: not recorded; find out why before trusting it"
                ));
            }
            KeyscanStatus::Unreachable(reason) => {
                down += 1;
                output::println(&format!("unreachable {host}: {}", inert(reason)));
            }
        }
    }
    if !other.is_empty() {
        output::println(&format!(
            "({} host{} not on ssh, not scanned)",
            other.len(),
            if other.len() == 1 { "" } else { "s" }
        ));
    }
    output::println(&format!(
        "{new} new, {same} unchanged, {changed} changed, {down} unreachable"
    ));
    if changed > 0 || down > 0 { 1 } else { 0 }
}
