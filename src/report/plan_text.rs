//! The plan for a person (`run --dry-run`): each client, its waves with
//! their hosts, and the exact commands each host would run, rollbacks and
//! `on_failure` included, secrets as `***`; each step with the file and
//! line it is written at, which may be a file the playbook includes.
//!
//! A client of 400 hosts must stay readable, so hosts whose rendered steps
//! are identical are shown once, as a group; only hosts whose commands
//! differ (because a template reads `host.name` or a host var) get sections
//! of their own. Client and host names come from the inventory and are
//! drawn [`inert`].

use std::fmt::Write;

use indexmap::IndexMap;

use super::terminal::inert;
use crate::plan::{ClientPlan, HostPlan, Plan, PlannedStep, Redactor};

pub fn render(plan: &Plan) -> String {
    let redactor = plan.redactor();
    let mut out = String::new();
    let hosts: Vec<&HostPlan> = plan.hosts().collect();
    let skipped = hosts.iter().filter(|h| h.skipped.is_some()).count();
    let _ = writeln!(
        out,
        "Dry run: {} ({})",
        plan.playbook.name,
        plan.playbook_path.display()
    );
    let _ = writeln!(
        out,
        "Inventory: {}: {} client{}, {} host{} ({} planned, {} skipped). Nothing is contacted.",
        plan.inventory_path.display(),
        plan.clients.len(),
        plural(plan.clients.len()),
        hosts.len(),
        plural(hosts.len()),
        hosts.len() - skipped,
        skipped
    );
    for client in &plan.clients {
        out.push('\n');
        render_client(&mut out, client, &redactor);
    }
    let missing = plan.secrets.missing();
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "\nnote: secrets not set on this machine (shown as ***; a real run needs them): {}",
            missing.join(", ")
        );
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn render_client(out: &mut String, client: &ClientPlan, redactor: &Redactor) {
    let planned = client.hosts.iter().filter(|h| h.skipped.is_none()).count();
    if planned == 0 {
        let _ = writeln!(out, "client {}: nothing to do", inert(&client.name));
        render_skipped(out, client);
        return;
    }
    let _ = writeln!(
        out,
        "client {}: {planned} host{} in {} wave{}",
        inert(&client.name),
        plural(planned),
        client.waves.len(),
        plural(client.waves.len())
    );
    let _ = writeln!(
        out,
        "  failure budget {} (halts after more than {} failed host{}), {} hosts at once, between waves: {}",
        client.failure_budget,
        client.allowed_failures,
        plural(client.allowed_failures),
        client.concurrency,
        match client.pause_between_waves {
            crate::load::Pause::Confirm => "ask for confirmation".to_string(),
            crate::load::Pause::Wait(d) if d.0.is_zero() => "no pause".to_string(),
            crate::load::Pause::Wait(d) => format!("wait {d}"),
        }
    );
    for wave in &client.waves {
        let _ = writeln!(
            out,
            "  wave {} ({} host{}): {}",
            wave.index,
            wave.hosts.len(),
            plural(wave.hosts.len()),
            inert(&wave.hosts.join(", "))
        );
    }
    render_reboots(out, client);
    render_skipped(out, client);

    // Group hosts by their rendered steps.
    let mut groups: IndexMap<String, Vec<&str>> = IndexMap::new();
    for host in client.hosts.iter().filter(|h| h.skipped.is_none()) {
        let mut section = String::new();
        render_steps(&mut section, host, redactor);
        groups.entry(section).or_default().push(&host.name);
    }
    for (section, names) in groups {
        let _ = writeln!(out);
        let _ = writeln!(out, "  steps on {}:", group_label(&names));
        out.push_str(&section);
    }
}

/// When the hosts may reboot (`reboot:` in the inventory), one line per
/// policy; "all hosts" when they share one.
fn render_reboots(out: &mut String, client: &ClientPlan) {
    let mut by_policy: IndexMap<String, Vec<&str>> = IndexMap::new();
    for host in client.hosts.iter().filter(|h| h.skipped.is_none()) {
        let policy = match &host.reboot {
            crate::load::RebootPolicy::Now => "at once (now)".to_string(),
            crate::load::RebootPolicy::Ask => "after the operator confirms (ask)".to_string(),
            crate::load::RebootPolicy::Window(w) => format!("in the window {}", w.describe()),
        };
        let policy = match host.reboot_with_users {
            crate::load::RebootWithUsers::Reboot => policy,
            crate::load::RebootWithUsers::Ask => {
                format!("{policy}, asking first if people are logged on (reboot_with_users: ask)")
            }
            crate::load::RebootWithUsers::Refuse => {
                format!("{policy}, not while people are logged on (reboot_with_users: refuse)")
            }
        };
        by_policy.entry(policy).or_default().push(&host.name);
    }
    let all = by_policy.len() == 1;
    for (policy, names) in by_policy {
        let who = if all {
            "all hosts".to_string()
        } else {
            inert(&names.join(", ")).into_owned()
        };
        let _ = writeln!(out, "  reboots {policy}: {who}");
    }
}

/// Skipped hosts, one line per reason.
fn render_skipped(out: &mut String, client: &ClientPlan) {
    let mut by_reason: IndexMap<&str, Vec<&str>> = IndexMap::new();
    for host in &client.hosts {
        if let Some(reason) = &host.skipped {
            by_reason.entry(reason).or_default().push(&host.name);
        }
    }
    for (reason, names) in by_reason {
        let _ = writeln!(
            out,
            "  skipped ({}): {}",
            inert(reason),
            inert(&names.join(", "))
        );
    }
}

/// The hosts a group of steps is shown for (names from the inventory,
/// drawn [`inert`]).
fn group_label(names: &[&str]) -> String {
    let label = match names.len() {
        1 => names[0].to_string(),
        n if n <= 6 => format!("{} ({n} hosts)", names.join(", ")),
        n => format!(
            "{}, ... {} ({n} hosts)",
            names[..3].join(", "),
            names[n - 1]
        ),
    };
    inert(&label).into_owned()
}

/// Who a host's steps run as, when any of them becomes another user: the
/// login user and the become user (`None`: every step runs as the login
/// user, and the plan says nothing about it).
fn users_of(host: &HostPlan) -> Option<Users> {
    fn any(steps: &[PlannedStep]) -> bool {
        steps
            .iter()
            .any(|s| s.def.step.r#become || any(&s.rollback))
    }
    (any(&host.steps) || any(&host.on_failure)).then(|| Users {
        login: host
            .target
            .user
            .clone()
            .unwrap_or_else(|| "the login user".into()),
        become_user: host.target.r#become.user.clone(),
    })
}

struct Users {
    login: String,
    become_user: String,
}

fn render_steps(out: &mut String, host: &HostPlan, redactor: &Redactor) {
    let users = users_of(host);
    let users = users.as_ref();
    if !host.baseline.is_empty() {
        let _ = writeln!(
            out,
            "    baseline (before the first step, again after the last; compared)"
        );
        for probe in &host.baseline {
            render_step(out, &probe.step, "-", 6, redactor, users);
            let _ = writeln!(out, "        {}", probe_terms(&probe.probe));
        }
    }
    let mut phase = "";
    for (i, step) in host.steps.iter().enumerate() {
        if step.phase() != phase {
            phase = step.phase();
            let _ = writeln!(out, "    {phase}");
        }
        render_step(out, step, &format!("{}.", i + 1), 6, redactor, users);
    }
    if !host.on_failure.is_empty() {
        let _ = writeln!(out, "    on failure (after rollback)");
        for step in &host.on_failure {
            render_step(out, step, "-", 6, redactor, users);
        }
    }
}

/// How a probe's items are read and judged, in one line.
fn probe_terms(probe: &crate::load::Probe) -> String {
    let mut terms = vec![format!("parse {}", crate::run::name_of(&probe.parse))];
    if let Some(key) = &probe.key {
        terms.push(format!("key {key}"));
    }
    for (verb, patterns) in [
        ("may appear", &probe.expect.appear),
        ("may disappear", &probe.expect.disappear),
        ("may change", &probe.expect.change),
    ] {
        if !patterns.is_empty() {
            let list: Vec<&str> = patterns.iter().map(|p| p.text.as_str()).collect();
            terms.push(format!("{verb}: {}", list.join(", ")));
        }
    }
    terms.push(format!(
        "on regression: {}",
        crate::run::name_of(&probe.on_regression)
    ));
    inert(&terms.join("; ")).into_owned()
}

fn render_step(
    out: &mut String,
    step: &PlannedStep,
    bullet: &str,
    indent: usize,
    redactor: &Redactor,
    users: Option<&Users>,
) {
    let pad = " ".repeat(indent);
    let s = &step.def.step;
    let mut flags = Vec::new();
    match users {
        Some(u) if s.r#become => flags.push(format!("as {} via sudo", u.become_user)),
        Some(u) => flags.push(format!("as {}", u.login)),
        None => {}
    }
    if s.check_safe {
        flags.push("check-safe".to_string());
    }
    if s.retries > 0 {
        flags.push(format!("retries {} every {}", s.retries, s.retry_delay));
    }
    if let Some(t) = s.timeout {
        flags.push(format!("timeout {t}"));
    }
    if s.ok_codes != [0] {
        flags.push(format!("ok codes {:?}", s.ok_codes));
    }
    if !s.reboot_codes.is_empty() {
        flags.push(format!("reboot on {:?}", s.reboot_codes));
    }
    if let Some(m) = s.marks {
        flags.push(format!("marks {}", crate::run::name_of(&m)));
    }
    if s.sensitive {
        flags.push("sensitive".into());
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", flags.join(", "))
    };
    let _ = writeln!(
        out,
        "{pad}{bullet} {}{flags}  ({}:{})",
        s.name,
        s.source.name(),
        s.at.line
    );
    let inner = " ".repeat(indent + bullet.len() + 1);
    if let Some(reason) = &step.skip {
        let _ = writeln!(out, "{inner}skipped: {reason}");
        return;
    }
    if let Some(when) = &s.when {
        let timing = if step.when_deferred {
            " (decided at run time)"
        } else {
            ""
        };
        let _ = writeln!(out, "{inner}when: {}{timing}", when.text.trim());
    }
    if let Some(capture) = &s.capture {
        let _ = writeln!(
            out,
            "{inner}captures `{}` ({})",
            capture.name,
            crate::run::name_of(&capture.parse)
        );
    }
    match &step.action {
        Some(action) => write_command(
            out,
            &inner,
            action.keyword(),
            &redactor.redact(&action.describe()),
        ),
        None => {
            let text = template_text(step);
            write_command(
                out,
                &inner,
                s.action.keyword(),
                &format!("{text}\n(rendered at run time from captured values)"),
            );
        }
    }
    if !step.rollback.is_empty() {
        let _ = writeln!(out, "{inner}rollback:");
        for r in &step.rollback {
            render_step(out, r, "-", indent + bullet.len() + 3, redactor, users);
        }
    }
}

fn template_text(step: &PlannedStep) -> String {
    use crate::load::Action;
    match &step.def.step.action {
        Action::Run(t) | Action::Sh(t) | Action::PowerShell(t) | Action::Cmd(t) => t.text.clone(),
        Action::Script { src, args } => {
            let args: Vec<&str> = args.iter().map(|a| a.text.as_str()).collect();
            format!("script {} {}", src.text, args.join(" "))
        }
        Action::Upload { src, dest, .. } => format!("upload {} -> {}", src.text, dest.text),
        Action::Reboot { .. } | Action::Wait(_) => String::new(),
    }
}

fn write_command(out: &mut String, pad: &str, keyword: &str, text: &str) {
    let mut lines = text.trim_end().lines();
    let first = lines.next().unwrap_or("");
    let _ = writeln!(out, "{pad}{keyword}: {first}");
    let cont = " ".repeat(keyword.len() + 2);
    for line in lines {
        let _ = writeln!(out, "{pad}{cont}{line}");
    }
}
