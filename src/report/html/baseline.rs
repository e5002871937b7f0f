//! "What changed besides the antivirus": per client, the baseline in one
//! sentence, then every host where anything differed, probe by probe, with
//! what appeared, disappeared and changed (regressions marked). Hosts where
//! nothing differed are named in one line, so 400 hosts stay readable.

use std::fmt::Write as _;

use super::badge;
use crate::report::baseline::{client_summary, outcome, regressed};
use crate::report::run_json::{ClientReport, HostReport};
use crate::report::text::Esc;
use crate::run::baseline::{BaselineStatus, ProbeDiff};

pub fn section(out: &mut String, client: &ClientReport) {
    let Some(summary) = client_summary(client) else {
        return;
    };
    put!(
        out,
        "<h3>What changed besides the antivirus</h3>\n<p class=\"baseline-summary\">{}</p>\n",
        Esc(&summary)
    );
    let (differed, quiet): (Vec<&HostReport>, Vec<&HostReport>) = client
        .hosts
        .iter()
        .filter(|h| !h.baseline.is_empty())
        .partition(|h| {
            h.baseline.iter().any(|d| {
                !matches!(
                    d.status,
                    BaselineStatus::Unchanged | BaselineStatus::Recorded
                )
            })
        });
    for host in differed {
        host_block(out, host);
    }
    if !quiet.is_empty() {
        let names: Vec<&str> = quiet.iter().take(50).map(|h| h.name.as_str()).collect();
        let more = quiet.len().saturating_sub(names.len());
        put!(
            out,
            "<p class=\"muted\">Nothing differed on: {}{}.</p>\n",
            Esc(&names.join(", ")),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
}

fn host_block(out: &mut String, host: &HostReport) {
    let class = if regressed(host) {
        "regressed"
    } else {
        "expected"
    };
    put!(
        out,
        "<div class=\"baseline {class}\">\n<h4>{}: what changed besides the antivirus</h4>\n<table>\n<thead><tr><th>Probe</th><th>Outcome</th><th>Disappeared</th><th>Appeared</th><th>Changed</th></tr></thead>\n<tbody>\n",
        Esc(&host.name)
    );
    for diff in &host.baseline {
        probe_row(out, diff);
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
}

fn probe_row(out: &mut String, diff: &ProbeDiff) {
    put!(out, "<tr><td>{}</td><td>", Esc(&diff.probe));
    let class = match diff.status {
        BaselineStatus::Regressed | BaselineStatus::Error if diff.warns() => "timed_out",
        BaselineStatus::Regressed | BaselineStatus::Error => "failed",
        _ => "ok",
    };
    badge(out, class, outcome(diff));
    if let Some(error) = &diff.error {
        put!(out, "<div class=\"muted\">{}</div>", Esc(error));
    }
    out.push_str("</td><td>");
    list(out, diff, &diff.disappeared, "lost");
    out.push_str("</td><td>");
    list(out, diff, &diff.appeared, "gained");
    out.push_str("</td><td>");
    let changes: Vec<String> = diff
        .changed
        .iter()
        .map(|c| format!("{}: {} → {}", c.item, c.before, c.after))
        .collect();
    list(out, diff, &changes, "changed");
    if diff.omitted > 0 {
        put!(
            out,
            "<div class=\"muted\">and {} more not listed</div>",
            diff.omitted
        );
    }
    out.push_str("</td></tr>\n");
}

/// Items, each marked as a regression where `expect` did not allow it.
fn list(out: &mut String, diff: &ProbeDiff, items: &[String], verb: &str) {
    if items.is_empty() {
        return;
    }
    out.push_str("<ul class=\"items\">");
    for item in items {
        let regression = diff.regressions.contains(&format!("{verb} {item}"));
        put!(
            out,
            "<li class=\"mono{}\">{}{}</li>",
            if regression { " regression" } else { "" },
            if regression { "✗ " } else { "" },
            Esc(item)
        );
    }
    out.push_str("</ul>");
}
