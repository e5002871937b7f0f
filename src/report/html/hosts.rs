//! The per-host parts of a client's section: the hosts that need attention
//! (what failed, its output, what the rollback did), the protection gap, and
//! the host list whose rows carry the removal and verification evidence and
//! open onto each host's step log.

use std::fmt::Write as _;

use super::{badge, label};
use crate::report::run_json::{ClientReport, HostReport, StepReport};
use crate::report::text::{
    self, Esc, PhaseOutcome, excerpt, failing_step, format_ms, show_time, step_failed,
};
use crate::run::{HostStatus, StepStatus};

/// The phases whose steps prove the old product is gone and the new one works.
const EVIDENCE: [(&str, &str); 2] = [
    ("uninstall", "Old product removed"),
    ("verify", "New product verified"),
];

pub fn attention(out: &mut String, client: &ClientReport) {
    let problems: Vec<&HostReport> = client
        .hosts
        .iter()
        .filter(|h| h.status.is_failure())
        .collect();
    put!(
        out,
        "<h3>Hosts that need attention ({})</h3>\n",
        problems.len()
    );
    if problems.is_empty() {
        out.push_str("<p class=\"muted\">None: no host failed or was out of reach.</p>\n");
    }
    for host in problems {
        problem(out, host);
    }
}

fn problem(out: &mut String, host: &HostReport) {
    put!(
        out,
        "<article class=\"problem s-{}\">\n<h4><span class=\"hostname\">{}</span> ",
        host.status.as_str(),
        Esc(&host.name)
    );
    badge(out, host.status.as_str(), label(host.status));
    if let Some(wave) = host.wave {
        put!(out, " <span class=\"muted\">wave {wave}</span>");
    }
    out.push_str("</h4>\n");
    if let Some(error) = &host.error {
        put!(out, "<p class=\"error\">{}</p>\n", Esc(error));
    }
    if host.status == HostStatus::Unreachable {
        out.push_str("<p>No connection could be made, so no step ran and nothing was changed on this host.</p>\n</article>\n");
        return;
    }
    if let Some(step) = failing_step(host) {
        failing(out, step);
    }
    rollback(out, host);
    out.push_str("</article>\n");
}

fn failing(out: &mut String, step: &StepReport) {
    put!(
        out,
        "<dl class=\"facts step\">\n<div><dt>Failing step</dt><dd>{}</dd></div>\n<div><dt>Phase</dt><dd>{}</dd></div>\n<div><dt>Outcome</dt><dd>",
        Esc(&step.name),
        Esc(&step.phase)
    );
    let status = text::name(step.status);
    badge(out, &status, &status);
    put!(
        out,
        "</dd></div>\n<div><dt>Exit code</dt><dd class=\"mono\">{}</dd></div>\n<div><dt>Attempts</dt><dd>{}</dd></div>\n<div><dt>Duration</dt><dd>{}</dd></div>\n<div><dt>Finished</dt><dd>{}</dd></div>\n",
        step.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into()),
        step.attempts,
        format_ms(step.duration_ms),
        Esc(&show_time(&step.finished_at))
    );
    if let Some(detail) = &step.detail {
        put!(
            out,
            "<div class=\"wide\"><dt>Detail</dt><dd>{}</dd></div>\n",
            Esc(detail)
        );
    }
    out.push_str("</dl>\n");
    output(
        out,
        step.stdout.as_deref(),
        step.stderr.as_deref(),
        40,
        6_000,
    );
}

/// A step's output, its last lines: where a command says why it failed.
fn output(
    out: &mut String,
    stdout: Option<&str>,
    stderr: Option<&str>,
    lines: usize,
    chars: usize,
) {
    if stdout.is_none() && stderr.is_none() {
        out.push_str("<p class=\"outlabel\">Output not recorded (sensitive step).</p>\n");
        return;
    }
    for (name, text) in [("Output", stdout), ("Errors", stderr)] {
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            put!(
                out,
                "<p class=\"outlabel\">{name} (last lines)</p>\n<pre>{}</pre>\n",
                Esc(&excerpt(text, lines, chars))
            );
        }
    }
}

fn rollback(out: &mut String, host: &HostReport) {
    let headline = match host.status {
        HostStatus::RollbackFailed => {
            "Rollback <strong>failed</strong>: a person must look at this endpoint"
        }
        HostStatus::RolledBackToUnsupportedProduct => {
            "Rollback succeeded, but it put back a product that <strong>no longer gets updates</strong>: this endpoint's protection decays until it is moved to a supported product"
        }
        _ if host.rollback.is_empty() => "Rollback: nothing had to be undone",
        _ => "Rollback succeeded: the endpoint was put back as it was",
    };
    put!(out, "<h5>{headline}</h5>\n");
    if host.rollback.is_empty() {
        return;
    }
    out.push_str("<table>\n<thead><tr><th>Rollback step</th><th>Outcome</th><th class=\"num\">Exit code</th><th>Detail</th><th>Finished</th></tr></thead>\n<tbody>\n");
    for r in &host.rollback {
        put!(out, "<tr><td>{}</td><td>", Esc(&r.name));
        let status = text::name(r.status);
        badge(out, &status, &status);
        put!(
            out,
            "</td><td class=\"num mono\">{}</td><td>{}",
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            Esc(r.detail.as_deref().unwrap_or(""))
        );
        if step_failed(r.status) {
            output(out, r.stdout.as_deref(), r.stderr.as_deref(), 20, 2_000);
        }
        put!(
            out,
            "</td><td>{}</td></tr>\n",
            Esc(&show_time(&r.finished_at))
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

pub fn gap_summary(out: &mut String, client: &ClientReport) {
    out.push_str("<h3>Protection gap</h3>\n");
    let mut gaps: Vec<(u64, &str)> = client
        .hosts
        .iter()
        .filter_map(|h| Some((h.protection_gap_ms?, h.name.as_str())))
        .collect();
    gaps.sort();
    let Some(&(longest, worst)) = gaps.last() else {
        out.push_str("<p class=\"muted\">No gap was measured: no host ran a step marked <code>protection_off</code>.</p>\n");
        return;
    };
    put!(
        out,
        "<p>How long each endpoint was without protection, from the step that turned the old product off to the step that confirmed the new one on. Measured on {}: longest <strong>{}</strong> (<b class=\"hostname\">{}</b>), median <strong>{}</strong>. Each host's gap is in the list below.</p>\n",
        super::svg::plural(gaps.len(), "host"),
        format_ms(longest),
        Esc(worst),
        format_ms(gaps[gaps.len() / 2].0)
    );
}

pub fn host_list(out: &mut String, client: &ClientReport) {
    out.push_str("<h3>Hosts: removal, verification and protection gap</h3>\n<p class=\"outlabel\">Open a host for its full step log.</p>\n<div class=\"hostlist\">\n<div class=\"hostrow head\"><span>Host</span><span>Wave</span><span>Outcome</span>");
    for (phase, title) in EVIDENCE {
        put!(out, "<span>{title} ({phase})</span>");
    }
    out.push_str("<span>Protection gap</span></div>\n");
    let longest = client
        .hosts
        .iter()
        .filter_map(|h| h.protection_gap_ms)
        .max()
        .unwrap_or(0);
    let mut hosts: Vec<&HostReport> = client.hosts.iter().collect();
    hosts.sort_by_key(|h| h.wave.unwrap_or(usize::MAX));
    for host in hosts {
        host_row(out, host, longest);
    }
    out.push_str("</div>\n");
}

fn host_row(out: &mut String, host: &HostReport, longest: u64) {
    put!(
        out,
        "<details class=\"host\">\n<summary class=\"hostrow\"><span class=\"hostname\">{}</span><span>{}</span><span>",
        Esc(&host.name),
        host.wave
            .map(|w| format!("wave {w}"))
            .unwrap_or_else(|| "–".into())
    );
    badge(out, host.status.as_str(), label(host.status));
    out.push_str("</span>");
    for (phase, _) in EVIDENCE {
        let (steps, outcome) = text::phase(host, phase);
        let class = match outcome {
            PhaseOutcome::Ok => "ok",
            PhaseOutcome::Failed => "timed_out",
            PhaseOutcome::Skipped => "skipped",
            PhaseOutcome::None => "none",
        };
        out.push_str("<span class=\"ev\">");
        badge(out, class, outcome.label());
        if let Some(last) = steps.last() {
            put!(
                out,
                "<span class=\"when\">{} · {}</span>",
                super::svg::plural(steps.len(), "step"),
                Esc(&show_time(&last.finished_at))
            );
        }
        out.push_str("</span>");
    }
    match host.protection_gap_ms {
        Some(gap) => {
            let share = if longest == 0 {
                0.0
            } else {
                100.0 * gap as f64 / longest as f64
            };
            put!(
                out,
                "<span class=\"gap\"><span class=\"gapbar\"><span style=\"width:{share:.1}%\"></span></span><span class=\"val\">{}</span></span>",
                format_ms(gap)
            );
        }
        None => out.push_str("<span class=\"gap muted\">–</span>"),
    }
    out.push_str("</summary>\n<div class=\"steps\">\n");
    step_log(out, host);
    out.push_str("</div>\n</details>\n");
}

/// Every step of the host and its rollback, with output for the evidence
/// phases and for what failed.
fn step_log(out: &mut String, host: &HostReport) {
    if let Some(error) = &host.error {
        put!(
            out,
            "<p><strong>{}:</strong> {}</p>\n",
            label(host.status),
            Esc(error)
        );
    }
    if let (Some(start), Some(end)) = (&host.started_at, &host.finished_at) {
        put!(
            out,
            "<p class=\"outlabel\">Started {}, finished {}.</p>\n",
            Esc(&show_time(start)),
            Esc(&show_time(end))
        );
    }
    // Who a reboot cut off: the operator's first question after one.
    for reboot in &host.reboots {
        let step = match reboot.step.as_str() {
            "" => String::new(),
            step => format!(" for step <q>{}</q>", Esc(step)),
        };
        put!(
            out,
            "<p class=\"reboot\"><strong>Rebooted</strong> {}{step}; {}.</p>\n",
            Esc(&show_time(&reboot.at)),
            Esc(&reboot.who())
        );
    }
    if host.steps.is_empty() {
        out.push_str("<p class=\"muted\">No step ran on this host.</p>\n");
        return;
    }
    out.push_str("<table>\n<thead><tr><th>Phase</th><th>Step</th><th>Outcome</th><th class=\"num\">Exit code</th><th class=\"num\">Attempts</th><th class=\"num\">Duration</th><th>Finished</th><th>Detail</th></tr></thead>\n<tbody>\n");
    for s in &host.steps {
        put!(
            out,
            "<tr><td>{}</td><td>{}</td><td>",
            Esc(&s.phase),
            Esc(&s.name)
        );
        let status = text::name(s.status);
        badge(out, &status, &status);
        put!(
            out,
            "</td><td class=\"num mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}",
            s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            s.attempts,
            format_ms(s.duration_ms),
            Esc(&show_time(&s.finished_at)),
            Esc(s.detail.as_deref().unwrap_or(""))
        );
        let evidence = EVIDENCE.iter().any(|(p, _)| *p == &*s.phase);
        if (evidence && s.status != StepStatus::Skipped) || step_failed(s.status) {
            output(out, s.stdout.as_deref(), s.stderr.as_deref(), 8, 1_000);
        }
        out.push_str("</td></tr>\n");
    }
    for r in &host.rollback {
        put!(out, "<tr><td>rollback</td><td>{}</td><td>", Esc(&r.name));
        let status = text::name(r.status);
        badge(out, &status, &status);
        put!(
            out,
            "</td><td class=\"num mono\">{}</td><td></td><td></td><td>{}</td><td>{}</td></tr>\n",
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            Esc(&show_time(&r.finished_at)),
            Esc(r.detail.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody>\n</table>\n");
}
