//! The plan as JSON (`run --dry-run --format json`), in a fixed shape
//! (tests and tools read it): `clients[].waves[]` as in the report, and per
//! host `name`, `wave`, `status` (`planned` | `skipped`), `reboot`
//! (`policy`: `now` | `window` | `ask`, and the `window`) and `steps[]` with
//! `phase`, `name` and `command` (secrets as `***`; `null` where rendered
//! at run time), its `timeout`, and the `origin` of each step: the file
//! (the playbook or one it includes) and line it is written at.

use serde::Serialize;

use crate::plan::{HostPlan, Plan, PlannedStep, Redactor, Wave};

#[derive(Serialize)]
pub struct PlanDoc<'a> {
    pub playbook: String,
    pub inventory: String,
    pub name: &'a str,
    pub clients: Vec<ClientDoc<'a>>,
}

#[derive(Serialize)]
pub struct ClientDoc<'a> {
    pub name: &'a str,
    pub failure_budget: String,
    pub allowed_failures: usize,
    pub concurrency: usize,
    pub pause_between_waves: String,
    pub waves: &'a [Wave],
    pub hosts: Vec<HostDoc<'a>>,
}

#[derive(Serialize)]
pub struct HostDoc<'a> {
    pub name: &'a str,
    pub wave: Option<usize>,
    pub status: &'static str,
    pub skip_reason: Option<&'a str>,
    pub os: &'static str,
    pub address: &'a str,
    pub transport: &'static str,
    pub reboot: RebootDoc,
    pub steps: Vec<StepDoc<'a>>,
    pub on_failure: Vec<StepDoc<'a>>,
    /// Probes run before the first step and after the last, compared.
    pub baseline: Vec<ProbeDoc<'a>>,
}

/// A baseline probe: how it is judged, and its command as a step's.
#[derive(Serialize)]
pub struct ProbeDoc<'a> {
    pub probe: &'a str,
    pub parse: crate::load::ProbeFormat,
    pub key: Option<&'a str>,
    pub on_regression: crate::load::OnRegression,
    pub expect: ExpectDoc<'a>,
    #[serde(flatten)]
    pub step: StepDoc<'a>,
}

#[derive(Serialize)]
pub struct ExpectDoc<'a> {
    pub appear: Vec<&'a str>,
    pub disappear: Vec<&'a str>,
    pub change: Vec<&'a str>,
}

/// The host's reboot policy: `now`, `window` (with when) or `ask`.
#[derive(Serialize)]
pub struct RebootDoc {
    pub policy: &'static str,
    /// `sat,sun 22:00-04:00 America/New_York`; only with `window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `reboot_with_users`: `reboot`, `ask` or `refuse`.
    pub with_users: &'static str,
}

#[derive(Serialize)]
pub struct StepDoc<'a> {
    pub phase: &'a str,
    pub name: &'a str,
    pub action: &'static str,
    pub command: Option<String>,
    /// The longest one try of the step may take, as a duration (`"20m"`);
    /// `null`: no limit. A reboot's is the shorter of its own and the step's.
    pub timeout: Option<String>,
    /// Why the step will not run on this host, when known at plan time.
    pub skip: Option<&'a str>,
    pub when: Option<&'a str>,
    pub check_safe: bool,
    /// The user the step runs as: the become user for `become` steps, else
    /// the login user (`null`: the transport's default login).
    pub run_as: Option<&'a str>,
    /// Whether the step becomes `run_as` through sudo.
    #[serde(rename = "become")]
    pub r#become: bool,
    pub origin: Origin,
    pub rollback: Vec<StepDoc<'a>>,
}

/// Where a step is written.
#[derive(Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

pub fn plan_doc<'a>(plan: &'a Plan, redactor: &Redactor) -> PlanDoc<'a> {
    PlanDoc {
        playbook: plan.playbook_path.display().to_string(),
        inventory: plan.inventory_path.display().to_string(),
        name: &plan.playbook.name,
        clients: plan
            .clients
            .iter()
            .map(|c| ClientDoc {
                name: &c.name,
                failure_budget: c.failure_budget.to_string(),
                allowed_failures: c.allowed_failures,
                concurrency: c.concurrency,
                pause_between_waves: c.pause_between_waves.to_string(),
                waves: &c.waves,
                hosts: c
                    .hosts
                    .iter()
                    .map(|h| HostDoc {
                        name: &h.name,
                        wave: h.wave,
                        status: if h.skipped.is_some() {
                            "skipped"
                        } else {
                            "planned"
                        },
                        skip_reason: h.skipped.as_deref(),
                        os: h.os.as_str(),
                        address: &h.target.address,
                        transport: h.target.kind.as_str(),
                        reboot: RebootDoc {
                            policy: h.reboot.kind(),
                            window: match &h.reboot {
                                crate::load::RebootPolicy::Window(w) => Some(w.describe()),
                                _ => None,
                            },
                            with_users: h.reboot_with_users.as_str(),
                        },
                        steps: h.steps.iter().map(|s| step_doc(s, h, redactor)).collect(),
                        on_failure: h
                            .on_failure
                            .iter()
                            .map(|s| step_doc(s, h, redactor))
                            .collect(),
                        baseline: h
                            .baseline
                            .iter()
                            .map(|p| probe_doc(p, h, redactor))
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn probe_doc<'a>(
    planned: &'a crate::plan::baseline::PlannedProbe,
    host: &'a HostPlan,
    redactor: &Redactor,
) -> ProbeDoc<'a> {
    let probe = &planned.probe;
    let texts = |patterns: &'a [crate::load::Pattern]| -> Vec<&'a str> {
        patterns.iter().map(|p| p.text.as_str()).collect()
    };
    ProbeDoc {
        probe: &probe.name,
        parse: probe.parse,
        key: probe.key.as_deref(),
        on_regression: probe.on_regression,
        expect: ExpectDoc {
            appear: texts(&probe.expect.appear),
            disappear: texts(&probe.expect.disappear),
            change: texts(&probe.expect.change),
        },
        step: step_doc(&planned.step, host, redactor),
    }
}

fn step_doc<'a>(step: &'a PlannedStep, host: &'a HostPlan, redactor: &Redactor) -> StepDoc<'a> {
    let r#become = step.def.step.r#become;
    StepDoc {
        phase: step.phase(),
        name: step.name(),
        action: step.def.step.action.keyword(),
        command: step.action.as_ref().map(|a| redactor.redact(&a.describe())),
        timeout: crate::plan::action_timeout(&step.def.step)
            .map(|t| crate::load::HumanDuration(t).to_string()),
        skip: step.skip.as_deref(),
        when: step.def.step.when.as_ref().map(|w| w.text.as_str()),
        check_safe: step.def.step.check_safe,
        run_as: if r#become {
            Some(host.target.r#become.user.as_str())
        } else {
            host.target.user.as_deref()
        },
        r#become,
        origin: Origin {
            file: step.def.step.source.name(),
            line: step.def.step.at.line,
        },
        rollback: step
            .rollback
            .iter()
            .map(|r| step_doc(r, host, redactor))
            .collect(),
    }
}

pub fn render(plan: &Plan) -> String {
    let redactor = plan.redactor();
    serde_json::to_string_pretty(&plan_doc(plan, &redactor)).expect("a plan serializes")
}
