//! `orchestrate status` and `orchestrate report`: read the journal back.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::EXIT_INVALID;
use super::args::{Format, ReportArgs, ReportFormat, StatusArgs};
use super::output;
use crate::journal::{self, Journal, Location};
use crate::report::run_json::{self, ClientReport, Report, counts};
use crate::report::terminal::inert;
use crate::run::{HostStatus, name_of};

fn journal_at(state: &Option<PathBuf>) -> Result<Journal, i32> {
    Location::of(state.as_deref(), || PathBuf::from(".orchestrate/state.db"))
        .and_then(|location| Journal::open_existing(&location))
        .map_err(|e| {
            eprintln!("error: {e}");
            EXIT_INVALID
        })
}

fn report_of(journal: &Journal, run_id: &str) -> Result<Report, i32> {
    journal.run(run_id).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_INVALID
    })?;
    let events = journal.events(run_id).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_INVALID
    })?;
    Ok(journal::replay(&events).report)
}

pub fn status(args: &StatusArgs) -> i32 {
    let journal = match journal_at(&args.state) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let Some(run_id) = &args.run_id else {
        let runs = match journal.runs() {
            Ok(runs) => runs,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        };
        match args.format {
            Format::Json => {
                output::println(&serde_json::to_string_pretty(&runs).unwrap_or_default())
            }
            Format::Human => {
                let mut out = format!(
                    "{:24}  {:16}  {:24}  {:24}  playbook\n",
                    "run", "status", "started", "finished"
                );
                for run in &runs {
                    let _ = writeln!(
                        out,
                        "{:24}  {:16}  {:24}  {:24}  {}",
                        inert(&run.run_id),
                        run.status.as_deref().unwrap_or("unfinished"),
                        run.started_at,
                        run.finished_at.as_deref().unwrap_or("-"),
                        inert(&run.playbook)
                    );
                }
                output::print(&out);
            }
        }
        return 0;
    };
    let report = match report_of(&journal, run_id) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let clients: Vec<ClientStatusView> = report.clients.iter().map(ClientStatusView::of).collect();
    let attention: Vec<serde_json::Value> = report
        .hosts()
        .filter(|h| {
            matches!(
                h.status,
                HostStatus::RollbackFailed | HostStatus::Unreachable
            )
        })
        .map(|h| serde_json::json!({ "host": h.name, "status": h.status, "error": h.error }))
        .collect();
    let unsupported: Vec<serde_json::Value> = on_unsupported_product(&report)
        .map(|h| serde_json::json!({ "host": h.name, "error": h.error }))
        .collect();
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "run_id": report.run_id,
                "playbook": report.playbook,
                "status": report.status,
                "started_at": report.started_at,
                "finished_at": report.finished_at,
                "clients": clients,
                "needs_a_person": attention,
                "on_unsupported_product": unsupported,
            });
            output::println(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Human => output::print(&human_status(&report, &clients)),
    }
    0
}

#[derive(serde::Serialize)]
struct ClientStatusView {
    name: String,
    status: String,
    halted: Option<String>,
    current_wave: Option<usize>,
    waves: usize,
    hosts: indexmap::IndexMap<&'static str, usize>,
    protection_gap_median_ms: Option<u64>,
    protection_gap_worst_ms: Option<u64>,
}

impl ClientStatusView {
    fn of(client: &ClientReport) -> ClientStatusView {
        let mut gaps: Vec<u64> = client
            .hosts
            .iter()
            .filter_map(|h| h.protection_gap_ms)
            .collect();
        gaps.sort_unstable();
        ClientStatusView {
            name: client.name.clone(),
            status: client
                .status
                .map(|s| name_of(&s))
                .unwrap_or_else(|| "unfinished".into()),
            halted: client.halted.clone(),
            current_wave: client
                .waves
                .iter()
                .filter(|w| w.started_at.is_some())
                .map(|w| w.index)
                .max(),
            waves: client.waves.len(),
            hosts: counts(client)
                .into_iter()
                .map(|(s, n)| (s.as_str(), n))
                .collect(),
            protection_gap_median_ms: gaps
                .get(gaps.len() / 2)
                .copied()
                .filter(|_| !gaps.is_empty()),
            protection_gap_worst_ms: gaps.last().copied(),
        }
    }
}

fn human_status(report: &Report, clients: &[ClientStatusView]) -> String {
    let mut out = String::new();
    let status = report.status.map(|s| name_of(&s)).unwrap_or_else(|| {
        "unfinished (interrupted hard, crashed or still running): resume it".into()
    });
    let _ = writeln!(out, "run {}: {status}", inert(&report.run_id));
    let _ = writeln!(
        out,
        "playbook {}, started {}",
        inert(&report.playbook),
        report.started_at
    );
    for c in clients {
        let _ = writeln!(
            out,
            "\n{}: {}, wave {} of {}{}",
            inert(&c.name),
            c.status,
            c.current_wave
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
            c.waves,
            c.halted
                .as_ref()
                .map(|h| format!(", halted: {}", inert(h)))
                .unwrap_or_default()
        );
        let counts: Vec<String> = c
            .hosts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let _ = writeln!(out, "  hosts: {}", counts.join(", "));
        if let (Some(median), Some(worst)) = (c.protection_gap_median_ms, c.protection_gap_worst_ms)
        {
            let _ = writeln!(
                out,
                "  protection gap: median {:.1}s, worst {:.1}s",
                median as f64 / 1000.0,
                worst as f64 / 1000.0
            );
        }
    }
    let attention: Vec<_> = report
        .hosts()
        .filter(|h| {
            matches!(
                h.status,
                HostStatus::RollbackFailed | HostStatus::Unreachable
            )
        })
        .collect();
    let waiting: Vec<_> = report.hosts().filter(|h| h.waiting.is_some()).collect();
    if !waiting.is_empty() {
        let _ = writeln!(out, "\nwaiting to reboot:");
        for h in waiting {
            let _ = writeln!(
                out,
                "  {}: {}",
                inert(&h.name),
                inert(h.waiting.as_deref().unwrap_or(""))
            );
        }
    }
    hosts_under(&mut out, "needs a person", &attention);
    let unsupported: Vec<_> = on_unsupported_product(report).collect();
    hosts_under(
        &mut out,
        "rolled back to a product that no longer gets updates (move them to a supported one)",
        &unsupported,
    );
    out
}

/// A titled list of hosts with their status and error; nothing if empty.
fn hosts_under(out: &mut String, title: &str, hosts: &[&run_json::HostReport]) {
    if hosts.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for h in hosts {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            h.status.as_str(),
            inert(&h.name),
            inert(h.error.as_deref().unwrap_or(""))
        );
    }
}

/// The hosts a rollback left on a product that no longer gets updates.
fn on_unsupported_product(report: &Report) -> impl Iterator<Item = &run_json::HostReport> {
    report
        .hosts()
        .filter(|h| h.status == HostStatus::RolledBackToUnsupportedProduct)
}

pub fn report(args: &ReportArgs) -> i32 {
    let journal = match journal_at(&args.state) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let report = match report_of(&journal, &args.run_id) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Opened (created 0600) before the report is drawn; a file that cannot
    // be written is an error about that file, exit 2.
    let file = match &args.output {
        Some(path) => match crate::owner_only::create(path) {
            Ok(file) => Some((path, file)),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    let text = match args.format {
        ReportFormat::Json => run_json::render(&report),
        ReportFormat::Html => crate::report::html::render(&report),
        ReportFormat::Junit => crate::report::junit::render(&report),
    };
    match file {
        Some((path, mut file)) => {
            use std::io::Write as _;
            if let Err(e) = file.write_all(text.as_bytes()) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_INVALID;
            }
        }
        None => output::println(&text),
    }
    0
}
