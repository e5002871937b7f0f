//! The baseline in words: a host's differences as lines, and a client's
//! as one sentence ("38 of 40 hosts unchanged; 2 lost tcp 0.0.0.0:1433
//! sqlservr (listening ports)"), shared by the summary, JUnit and HTML so
//! they all say the same thing.

use std::fmt::Write as _;

use indexmap::IndexMap;

use super::run_json::{ClientReport, HostReport};
use crate::run::baseline::{BaselineStatus, ProbeDiff};

/// Whether the host's baseline was compared (not only recorded).
pub fn compared(host: &HostReport) -> bool {
    host.baseline
        .iter()
        .any(|d| d.status != BaselineStatus::Recorded)
}

/// The host's regressions (and probe errors), on any probe.
pub fn regressed(host: &HostReport) -> bool {
    host.baseline.iter().any(|d| d.fails_host() || d.warns())
}

/// How a probe came out, in a word or two.
pub fn outcome(diff: &ProbeDiff) -> &'static str {
    match diff.status {
        BaselineStatus::Recorded => "recorded",
        BaselineStatus::Unchanged => "unchanged",
        BaselineStatus::Expected => "only expected changes",
        BaselineStatus::Regressed if diff.warns() => "regression (warn)",
        BaselineStatus::Regressed => "regression",
        BaselineStatus::Error => "probe failed",
    }
}

/// Every probe's difference, a few lines each: what appeared, disappeared
/// and changed, regressions marked `!`.
pub fn diff_lines(diffs: &[ProbeDiff]) -> String {
    let mut out = String::new();
    for diff in diffs {
        let counts = match (diff.items_before, diff.items_after) {
            (Some(b), Some(a)) => format!(" ({b} items before, {a} after)"),
            (Some(b), None) => format!(" ({b} items)"),
            _ => String::new(),
        };
        let _ = writeln!(out, "baseline `{}`: {}{counts}", diff.probe, outcome(diff));
        if let Some(error) = &diff.error {
            let _ = writeln!(out, "  error: {error}");
        }
        let flag = |regression: String| {
            if diff.regressions.contains(&regression) {
                "!"
            } else {
                " "
            }
        };
        for item in &diff.disappeared {
            let _ = writeln!(out, " {}- {item}", flag(format!("lost {item}")));
        }
        for item in &diff.appeared {
            let _ = writeln!(out, " {}+ {item}", flag(format!("gained {item}")));
        }
        for change in &diff.changed {
            let mark = flag(format!(
                "changed {}: {} → {}",
                change.item, change.before, change.after
            ));
            let _ = writeln!(
                out,
                " {mark}~ {}: {} → {}",
                change.item, change.before, change.after
            );
        }
        if diff.omitted > 0 {
            let _ = writeln!(out, "   ... and {} more not listed", diff.omitted);
        }
    }
    out
}

/// The client's baseline in one sentence, or `None` if no host had one.
pub fn client_summary(client: &ClientReport) -> Option<String> {
    let with: Vec<&HostReport> = client
        .hosts
        .iter()
        .filter(|h| !h.baseline.is_empty())
        .collect();
    if with.is_empty() {
        return None;
    }
    let compared: Vec<&HostReport> = with.iter().copied().filter(|h| compared(h)).collect();
    if compared.is_empty() {
        return Some(format!(
            "baseline recorded on {} host{} (not compared: nothing was changed)",
            with.len(),
            if with.len() == 1 { "" } else { "s" }
        ));
    }
    let unchanged = compared.iter().filter(|h| !regressed(h)).count();
    let mut groups: IndexMap<String, usize> = IndexMap::new();
    for host in &compared {
        let mut seen = Vec::new();
        for diff in &host.baseline {
            let what: Vec<String> = match &diff.error {
                Some(_) if diff.status == BaselineStatus::Error => {
                    vec![format!("could not run `{}`", diff.probe)]
                }
                _ => diff
                    .regressions
                    .iter()
                    .map(|r| format!("{r} ({})", diff.probe))
                    .collect(),
            };
            for w in what {
                if !seen.contains(&w) {
                    *groups.entry(w.clone()).or_default() += 1;
                    seen.push(w);
                }
            }
        }
    }
    groups.sort_by(|_, a, _, b| b.cmp(a));
    let mut sentence = format!(
        "{unchanged} of {} host{} unchanged",
        compared.len(),
        if compared.len() == 1 { "" } else { "s" }
    );
    for (what, n) in groups.iter().take(5) {
        let _ = write!(sentence, "; {n} {what}");
    }
    if groups.len() > 5 {
        let _ = write!(sentence, "; and {} other differences", groups.len() - 5);
    }
    Some(sentence)
}
