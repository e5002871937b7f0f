//! Planning the baseline: each host's probes, with their commands
//! rendered like steps', and the `must_reach` probe made from the
//! inventory.
//!
//! A playbook's probes are compiled once (as steps, under the keys
//! `baseline[N]`) and planned per host by the same [`HostPlanner`] as
//! steps, so an undefined variable in a probe is a plan error at its line.
//! A probe whose `os` leaves a host out is not that host's. The
//! `must_reach` probe is not written in any playbook: it is built here,
//! per host, from the targets the inventory names, already rendered (the
//! targets were checked by the loader; they are quoted all the same).

use std::sync::Arc;

use super::steps::{HostPlanner, define};
use super::templates::Templates;
use super::{PlannedStep, RenderedAction, StepDef};
use crate::load::baseline::MUST_REACH;
use crate::load::must_reach::Target;
use crate::load::{
    Action, Expect, InputError, OnRegression, Pattern, Place, Probe, ProbeFormat, SourceFile, Step,
    Template,
};
use crate::quote::{ps_quote, sh_quote};
use crate::transport::{Os, Script};

/// How long the `must_reach` probe waits for each TCP connection.
pub const CONNECT_TIMEOUT_SECS: u32 = 3;

/// A probe as one host runs it.
pub struct PlannedProbe {
    pub probe: Arc<Probe>,
    pub step: PlannedStep,
}

/// A playbook probe, compiled once for all hosts.
pub(super) struct ProbeDef {
    probe: Arc<Probe>,
    def: Arc<StepDef>,
}

pub(super) fn define_probes(
    probes: &[Probe],
    templates: &mut Templates,
    errors: &mut Vec<InputError>,
) -> Vec<ProbeDef> {
    probes
        .iter()
        .enumerate()
        .map(|(i, probe)| ProbeDef {
            probe: Arc::new(probe.clone()),
            def: define(
                &format!("baseline[{i}]"),
                "baseline",
                &probe.step,
                templates,
                errors,
            ),
        })
        .collect()
}

/// The probes of one host: the playbook's that apply to its OS, then
/// `must_reach` if the inventory names targets for it.
pub(super) fn plan_probes(
    planner: &mut HostPlanner<'_>,
    defs: &[ProbeDef],
    must_reach: &[String],
    inventory: &SourceFile,
    at: Place,
) -> Vec<PlannedProbe> {
    let mut planned: Vec<PlannedProbe> = defs
        .iter()
        .map(|d| PlannedProbe {
            probe: Arc::clone(&d.probe),
            step: planner.plan_step(&d.def, false),
        })
        .filter(|p| p.step.skip.is_none())
        .collect();
    if !must_reach.is_empty() {
        planned.push(must_reach_probe(planner.os, must_reach, inventory, at));
    }
    planned
}

/// A TCP connect to each target from the endpoint; prints each target it
/// reached, as written. A target reached before and not after is a
/// regression; one that becomes reachable is not.
fn must_reach_probe(os: Os, targets: &[String], inventory: &SourceFile, at: Place) -> PlannedProbe {
    let parsed: Vec<(String, Target)> = targets
        .iter()
        .filter_map(|t| Target::parse(t).ok().map(|p| (t.clone(), p)))
        .collect();
    let script = if os.is_posix() {
        Script::Sh(posix_reach(&parsed))
    } else {
        Script::PowerShell(windows_reach(&parsed))
    };
    let step = Step {
        name: MUST_REACH.into(),
        action: Action::Sh(Template {
            text: script.text().to_string(),
            at,
        }),
        os: None,
        when: None,
        timeout: Some(crate::load::HumanDuration(
            crate::load::baseline::DEFAULT_PROBE_TIMEOUT,
        )),
        retries: 0,
        retry_delay: crate::load::HumanDuration(std::time::Duration::ZERO),
        until: None,
        ok_codes: vec![0],
        reboot_codes: Vec::new(),
        capture: None,
        rollback: Vec::new(),
        check_safe: true,
        sensitive: false,
        marks: None,
        r#become: false,
        at,
        source: inventory.clone(),
        include_vars: Default::default(),
    };
    let probe = Probe {
        name: MUST_REACH.into(),
        step: step.clone(),
        parse: ProbeFormat::Lines,
        key: None,
        expect: Expect {
            // Reaching more than before is no regression.
            appear: vec![Pattern::new("*").expect("`*` is a pattern")],
            ..Expect::default()
        },
        on_regression: OnRegression::Fail,
    };
    let timeout = super::action_timeout(&step);
    PlannedProbe {
        probe: Arc::new(probe),
        step: PlannedStep {
            def: Arc::new(StepDef {
                key: "baseline.must_reach".into(),
                phase: "baseline".into(),
                step,
                rollback: Vec::new(),
            }),
            action: Some(Arc::new(RenderedAction {
                kind: super::ActionKind::Shell(script),
                timeout,
            })),
            when_deferred: false,
            skip: None,
            rollback: Vec::new(),
        },
    }
}

/// `nc -z` where there is one, else bash's `/dev/tcp` under `timeout`;
/// neither is an error, not "unreachable" (which would hide a regression).
fn posix_reach(targets: &[(String, Target)]) -> String {
    let mut script = format!(
        "# must_reach (inventory): a TCP connect from this host, {CONNECT_TIMEOUT_SECS}s at most each\n\
         reach() {{\n\
         \x20 if command -v nc >/dev/null 2>&1; then nc -z -w {CONNECT_TIMEOUT_SECS} \"$1\" \"$2\" >/dev/null 2>&1\n\
         \x20 elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then\n\
         \x20   timeout {CONNECT_TIMEOUT_SECS} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$1\" \"$2\" >/dev/null 2>&1\n\
         \x20 else echo 'must_reach: this host has neither nc nor bash and timeout' >&2; exit 3\n\
         \x20 fi\n\
         }}\n"
    );
    for (text, target) in targets {
        script.push_str(&format!(
            "if reach {} {}; then echo {}; fi\n",
            sh_quote(&target.host),
            target.port,
            sh_quote(text)
        ));
    }
    script
}

/// `[System.Net.Sockets.TcpClient]`, as `Test-NetConnection` does, but
/// with a timeout of our own (Test-NetConnection waits about 20 s).
fn windows_reach(targets: &[(String, Target)]) -> String {
    let mut script = format!(
        "# must_reach (inventory): a TCP connect from this host, {CONNECT_TIMEOUT_SECS}s at most each\n\
         $targets = @()\n"
    );
    for (text, t) in targets {
        // `+= ,@(...)` adds the triple as one element (`@(@(...))` would flatten it).
        script.push_str(&format!(
            "$targets += ,@({}, {}, {})\n",
            ps_quote(&t.host),
            t.port,
            ps_quote(text)
        ));
    }
    script.push_str(&format!(
        "foreach ($t in $targets) {{\n\
         \x20 $client = New-Object System.Net.Sockets.TcpClient\n\
         \x20 try {{ if ($client.ConnectAsync($t[0], $t[1]).Wait({}) -and $client.Connected) {{ $t[2] }} }}\n\
         \x20 catch {{ }} finally {{ $client.Dispose() }}\n\
         }}\n",
        CONNECT_TIMEOUT_SECS * 1000
    ));
    script
}
