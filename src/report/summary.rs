//! The table printed when a run ends: per client, hosts by outcome, and
//! the hosts that need a person, with the reason. Hosts rolled back to a
//! product that no longer gets updates have a column of their own
//! (`unsupported`): they failed like `failed` ones, but are left on
//! decaying protection, and are said so under the table. Names and errors are
//! drawn through [`inert`]: they came from the inventory or the endpoints.
//! Then, per client with a baseline, what changed besides the antivirus,
//! and the hosts that succeeded with a `warn` probe's regression; and the
//! reboots that cut someone's session, with whose.

use std::fmt::Write;

use super::run_json::{Report, counts};
use super::terminal::inert;
use crate::run::{HostStatus, name_of};

/// Reboots with someone logged on listed at most, so that a fleet's summary
/// stays a summary.
const SESSIONS_CUT_SHOWN: usize = 20;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let status = report
        .status
        .map(|s| name_of(&s))
        .unwrap_or_else(|| "interrupted".into());
    let _ = writeln!(out, "\nrun {}: {status}", report.run_id);
    if report.rehearsal {
        let _ = writeln!(
            out,
            "  a rehearsal: every host was simulated; no real host was contacted"
        );
    }
    let width = report
        .clients
        .iter()
        .map(|c| inert(&c.name).chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "  {:width$}  {:11}  {:>9}  {:>6}  {:>11}  {:>15}  {:>11}  {:>11}  {:>7}  {:>9}",
        "client",
        "status",
        "succeeded",
        "failed",
        "unsupported",
        "rollback_failed",
        "unreachable",
        "not_started",
        "skipped",
        "worst gap"
    );
    for client in &report.clients {
        let c = counts(client);
        let worst = client
            .hosts
            .iter()
            .filter_map(|h| h.protection_gap_ms)
            .max();
        let status = client
            .status
            .map(|s| name_of(&s))
            .unwrap_or_else(|| "running".into());
        let _ = writeln!(
            out,
            "  {:width$}  {:11}  {:>9}  {:>6}  {:>11}  {:>15}  {:>11}  {:>11}  {:>7}  {:>9}",
            inert(&client.name),
            status,
            c[&HostStatus::Succeeded],
            c[&HostStatus::Failed],
            c[&HostStatus::RolledBackToUnsupportedProduct],
            c[&HostStatus::RollbackFailed],
            c[&HostStatus::Unreachable],
            c[&HostStatus::NotStarted],
            c[&HostStatus::Skipped],
            worst.map(format_ms).unwrap_or_else(|| "-".into()),
        );
    }
    for client in &report.clients {
        if let Some(reason) = &client.halted {
            let _ = writeln!(out, "\n{} halted: {}", inert(&client.name), inert(reason));
        }
    }
    for client in &report.clients {
        if let Some(sentence) = super::baseline::client_summary(client) {
            let _ = writeln!(
                out,
                "\n{} baseline: {}",
                inert(&client.name),
                inert(&sentence)
            );
        }
        // Succeeded, but flagged: a `warn` probe saw something unexpected.
        for host in client
            .hosts
            .iter()
            .filter(|h| h.status == HostStatus::Succeeded)
        {
            for diff in host.baseline.iter().filter(|d| d.warns()) {
                let _ = writeln!(
                    out,
                    "  warning {}: {}",
                    inert(&host.name),
                    inert(&diff.summary())
                );
            }
        }
    }
    // Reboots that cut someone's session: who may call the help desk.
    let mut cut: Vec<String> = Vec::new();
    for client in &report.clients {
        for host in &client.hosts {
            for reboot in host.reboots.iter().filter(|r| !r.logged_on.is_empty()) {
                cut.push(format!(
                    "  {}/{}: {}",
                    inert(&client.name),
                    inert(&host.name),
                    inert(&reboot.who())
                ));
            }
        }
    }
    if !cut.is_empty() {
        let _ = writeln!(
            out,
            "
reboots with someone logged on:"
        );
        for line in cut.iter().take(SESSIONS_CUT_SHOWN) {
            let _ = writeln!(out, "{line}");
        }
        if cut.len() > SESSIONS_CUT_SHOWN {
            let _ = writeln!(
                out,
                "  and {} more (each host's `reboots` in the JSON report)",
                cut.len() - SESSIONS_CUT_SHOWN
            );
        }
    }
    let unsupported = report
        .hosts()
        .filter(|h| h.status == HostStatus::RolledBackToUnsupportedProduct)
        .count();
    if unsupported > 0 {
        let _ = writeln!(
            out,
            "\n{unsupported} host{} rolled back to a product that no longer gets updates (rolled_back_to_unsupported_product): protected today, less every day; move {} to a supported product",
            if unsupported == 1 { " was" } else { "s were" },
            if unsupported == 1 { "it" } else { "them" },
        );
    }
    let attention: Vec<_> = report.hosts().filter(|h| h.status.is_failure()).collect();
    if !attention.is_empty() {
        let _ = writeln!(out, "\nhosts that did not make it:");
        for host in attention {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                host.status.as_str(),
                inert(&host.name),
                inert(host.error.as_deref().unwrap_or(""))
            );
        }
    }
    out
}

/// A duration as the summary and the HTML report show it: `850ms`, `4.2s`, `2m05s`.
pub(crate) fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
