//! The table printed when a run ends: per client, hosts by outcome, and
//! the hosts that need a person, with the reason. Names and errors are
//! drawn through [`inert`]: they came from the inventory or the endpoints.

use std::fmt::Write;

use super::run_json::{Report, counts};
use super::terminal::inert;
use crate::run::{HostStatus, name_of};

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
        "  {:width$}  {:11}  {:>9}  {:>6}  {:>15}  {:>11}  {:>11}  {:>7}  {:>9}",
        "client",
        "status",
        "succeeded",
        "failed",
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
            "  {:width$}  {:11}  {:>9}  {:>6}  {:>15}  {:>11}  {:>11}  {:>7}  {:>9}",
            inert(&client.name),
            status,
            c[&HostStatus::Succeeded],
            c[&HostStatus::Failed],
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
    let attention: Vec<_> = report
        .hosts()
        .filter(|h| {
            matches!(
                h.status,
                HostStatus::RollbackFailed | HostStatus::Unreachable | HostStatus::Failed
            )
        })
        .collect();
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
