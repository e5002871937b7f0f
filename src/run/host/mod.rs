//! One host's run: its steps in order, then, if one fails, the rollback of
//! everything done so far and the playbook's `on_failure` steps.
//!
//! The rule this module exists to keep: an endpoint is never left without
//! protection and without a record. Every path out of [`run_host`] emits a
//! `HostFinished`; a step that fails after its retries, and an interruption
//! that catches a host half migrated, both roll the host back before it is
//! let go.
//!
//! Its files depend one way: [`context`] (who the host is and what it
//! reports to) ← [`deadline`] (an action's time limit, uploads cut at it)
//! ← [`perform`] (an action over the session) ← [`attempt`]
//! (one step's rules: codes, capture, until, retries) ← [`rollback`] ←
//! [`recover`] (after a lost connection) ← this module, which runs the
//! host's steps in order.

mod attempt;
mod baseline;
mod context;
mod deadline;
mod logged_on;
mod perform;
mod reboot;
mod recover;
mod rollback;

use std::time::Duration;

use serde_json::{Map, Value};

use self::attempt::{Attempt, kept, resolve_action, run_with_retries, skip_reason, skipped};
use self::context::Gap;
pub(crate) use self::context::HostRun;
use self::context::connect;
use self::recover::{LostStep, reconnect_and_roll_back};
use self::rollback::roll_back;
use super::events::{CaptureRecord, Event, HostStatus, StepRecord, StepStatus};
use crate::load::Mark;
use crate::plan::PlannedStep;
use crate::transport::{BoundedOutput, Connectors, Session};

pub(crate) async fn run_host(run: HostRun<'_>, connectors: &Connectors) -> HostStatus {
    let host = run.host;
    let session = match connect(host, connectors).await {
        Ok(session) => session,
        Err(e) => return run.finish(HostStatus::Unreachable, Some(e.to_string()), None),
    };
    let status = run_steps(&run, session.as_ref(), connectors).await;
    session.close().await;
    status
}

async fn run_steps(
    run: &HostRun<'_>,
    session: &dyn Session,
    connectors: &Connectors,
) -> HostStatus {
    let mut vars: Map<String, Value> = run.host.vars();
    let mut done: Vec<&PlannedStep> = Vec::new();
    let mut changed = false;
    let mut gap = Gap::default();
    if let Some(resume) = &run.resume {
        // Resuming a host caught mid-way: the steps it completed are not
        // repeated (precheck steps are, so that what they capture is
        // fresh), but what they captured is restored, and they are
        // remembered so that a later failure rolls them back too.
        vars.extend(resume.captured.clone());
        for (index, step) in run.host.steps.iter().enumerate() {
            if resume.completed.contains(&index) && !is_precheck(step) {
                let def = &step.def.step;
                if def.marks == Some(Mark::ProtectionOff) {
                    gap.off();
                }
                if def.marks == Some(Mark::ProtectionOn) {
                    gap.on();
                }
                changed |= !def.check_safe;
                done.push(step);
            }
        }
    }

    // The baseline is taken before anything changes, once: a resumed host
    // compares with what it was before it was first touched.
    let carried_before = run.resume.as_ref().and_then(|r| r.baseline_before.clone());
    let before = match carried_before {
        Some(before) => before,
        None if run.host.baseline.is_empty() => Vec::new(),
        None => match baseline::take_before(run, session).await {
            Ok(before) => before,
            Err(error) => return run.finish(HostStatus::Failed, Some(error), gap.end()),
        },
    };

    for (index, step) in run.host.steps.iter().enumerate() {
        if run.stop.is_cancelled() {
            if !changed {
                return run.finish(
                    HostStatus::NotStarted,
                    Some("interrupted before anything was changed".into()),
                    gap.end(),
                );
            }
            let reason = format!(
                "interrupted after step `{}`",
                done.last().map(|s| s.name()).unwrap_or("")
            );
            return roll_back(run, session, &done, &mut vars, reason, gap).await;
        }
        let def = &step.def.step;
        if let Some(resume) = &run.resume
            && resume.completed.contains(&index)
            && !is_precheck(step)
        {
            continue; // carried over above
        }
        if let Some(reason) = skip_reason(run, step, &vars) {
            emit_step(run, step, index, skipped(reason));
            continue;
        }
        if run.check && !def.check_safe {
            let detail = match resolve_action(run, step, &vars) {
                Ok(action) => format!("would run: {}", run.redactor.redact(&action.describe())),
                Err(e) => format!("would run (not renderable yet: {e})"),
            };
            emit_step(run, step, index, skipped(detail));
            continue;
        }
        if def.marks == Some(Mark::ProtectionOff) {
            gap.off();
        }
        let (attempt, attempts, duration) =
            run_with_retries(run, session, step, index, &mut vars).await;
        let ok = attempt.status == StepStatus::Ok;
        let error = (!ok).then(|| {
            format!(
                "step `{}` ({}) {}",
                def.name,
                step.phase(),
                attempt.detail.clone().unwrap_or_else(|| "failed".into())
            )
        });
        emit_record(run, step, index, &attempt, attempts, duration, Some(&vars));
        if !ok {
            if run.check {
                return run.finish(HostStatus::Failed, error, gap.end());
            }
            let mut to_undo = done.clone();
            to_undo.push(step);
            let error = error.unwrap_or_default();
            if attempt.lost {
                // The connection broke mid-step: reconnect to roll back, or
                // say plainly that nobody knows what state the host is in.
                let lost = LostStep {
                    session,
                    to_undo: &to_undo,
                    error,
                };
                return reconnect_and_roll_back(run, lost, connectors, &mut vars, gap).await;
            }
            return roll_back(run, session, &to_undo, &mut vars, error, gap).await;
        }
        if def.marks == Some(Mark::ProtectionOn) {
            gap.on();
        }
        changed |= !def.check_safe;
        done.push(step);
    }
    if !run.check && !run.host.baseline.is_empty() {
        match baseline::compare_after(run, session, &before).await {
            baseline::After::Passed => {}
            baseline::After::Regressed(error) => {
                return roll_back(run, session, &done, &mut vars, error, gap).await;
            }
            baseline::After::Lost(error) => {
                let lost = LostStep {
                    session,
                    to_undo: &done,
                    error,
                };
                return reconnect_and_roll_back(run, lost, connectors, &mut vars, gap).await;
            }
        }
    }
    run.finish(HostStatus::Succeeded, None, gap.end())
}

/// Steps run again on resume, whatever they did before.
fn is_precheck(step: &PlannedStep) -> bool {
    step.def.step.check_safe || step.phase() == "precheck"
}

fn emit_step(run: &HostRun<'_>, step: &PlannedStep, index: usize, attempt: Attempt) {
    emit_record(run, step, index, &attempt, 0, Duration::ZERO, None);
}

fn emit_record(
    run: &HostRun<'_>,
    step: &PlannedStep,
    index: usize,
    attempt: &Attempt,
    attempts: u32,
    duration: Duration,
    vars: Option<&Map<String, Value>>,
) {
    let def = &step.def.step;
    let capture = def
        .capture
        .as_ref()
        .filter(|_| attempt.status == StepStatus::Ok)
        .map(|c| {
            let value = vars
                .and_then(|v| v.get(&c.name))
                .filter(|_| !def.sensitive)
                .and_then(|value| {
                    // Journaled only if it holds no secret: redaction must not change it.
                    let text = value.to_string();
                    (run.redactor.redact(&text) == text).then(|| value.clone())
                });
            CaptureRecord {
                name: c.name.clone(),
                value,
            }
        });
    let keep = |output: &BoundedOutput| (!def.sensitive).then(|| kept(run, output));
    run.events.emit(Event::StepFinished {
        client: run.client(),
        host: run.host.name.clone(),
        step: StepRecord {
            phase: step.phase().to_string(),
            name: def.name.clone(),
            index,
            status: attempt.status,
            exit_code: attempt.exit_code,
            attempts,
            duration_ms: duration.as_millis() as u64,
            detail: attempt.detail.as_ref().map(|d| run.redactor.redact(d)),
            stdout: keep(&attempt.stdout),
            stderr: keep(&attempt.stderr),
            check_safe: def.check_safe,
            capture,
        },
    });
}
