//! The rules of one step's attempt: render its action (now, if it reads
//! values captured at run time), carry it out, and judge the result by the
//! step's `ok_codes` and `reboot_codes`, its `capture` and its `until`;
//! then retry it as its `retries` and `retry_delay` say.
//!
//! Apart from the host's run ([`super`]) and the rollback
//! ([`super::rollback`]), which both attempt steps with these same rules
//! and only differ in what they do with a failure. It depends on the
//! context and on [`super::perform`], never on those two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::context::HostRun;
use super::perform::{Performed, perform};
use crate::load::{HumanDuration, Step};
use crate::plan::{PlannedStep, RenderedAction};
use crate::run::capture;
use crate::run::events::{Event, StepStatus};
use crate::transport::{BoundedOutput, ExitStatus, Session, TransportError};

/// What a step attempt came to.
pub(super) struct Attempt {
    /// The connection broke: the step's outcome on the host is unknown.
    pub(super) lost: bool,
    /// The step did its work but its reboot was refused (the operator said
    /// no, nobody could be asked, `reboot_with_users: refuse`): trying it
    /// again would do the work again only to be refused again.
    pub(super) reboot_refused: bool,
    pub(super) status: StepStatus,
    pub(super) exit_code: Option<i32>,
    pub(super) detail: Option<String>,
    /// What the transport kept: bounded, whatever the host sent.
    pub(super) stdout: BoundedOutput,
    pub(super) stderr: BoundedOutput,
}

pub(super) fn skipped(detail: String) -> Attempt {
    Attempt {
        lost: false,
        reboot_refused: false,
        status: StepStatus::Skipped,
        exit_code: None,
        detail: Some(detail),
        stdout: BoundedOutput::default(),
        stderr: BoundedOutput::default(),
    }
}

/// Why a step does not run here: planned so, or its `when` is false now.
pub(super) fn skip_reason(
    run: &HostRun<'_>,
    step: &PlannedStep,
    vars: &Map<String, Value>,
) -> Option<String> {
    if let Some(reason) = &step.skip {
        return Some(reason.clone());
    }
    let when = step.def.step.when.as_ref()?;
    if !step.when_deferred {
        return None;
    }
    match condition(run, &format!("{}.when", step.def.key), vars) {
        Ok(true) => None,
        Ok(false) => Some(format!("when `{}` is false", when.text.trim())),
        // A `when` that cannot be decided does not run the step; the
        // record says why, so nothing happens silently.
        Err(e) => Some(format!(
            "when `{}` could not be decided: {e}",
            when.text.trim()
        )),
    }
}

fn context(vars: &Map<String, Value>) -> tera::Context {
    tera::Context::from_serialize(vars).unwrap_or_default()
}

fn condition(run: &HostRun<'_>, key: &str, vars: &Map<String, Value>) -> Result<bool, String> {
    run.plan
        .templates
        .condition(key, &context(vars))
        .map_err(|e| e.message)
}

pub(super) fn resolve_action(
    run: &HostRun<'_>,
    step: &PlannedStep,
    vars: &Map<String, Value>,
) -> Result<Arc<RenderedAction>, String> {
    if let Some(action) = &step.action {
        return Ok(Arc::clone(action));
    }
    crate::plan::render_action(&run.plan.templates, &step.def, &context(vars))
        .map(Arc::new)
        .map_err(|e| format!("template at line {}: {}", e.at.line, e.message))
}

/// Runs a step until it succeeds (and its `until` holds) or its retries
/// are spent. Returns the last attempt, the number of attempts and the time.
pub(super) async fn run_with_retries(
    run: &HostRun<'_>,
    session: &dyn Session,
    step: &PlannedStep,
    index: usize,
    vars: &mut Map<String, Value>,
) -> (Attempt, u32, Duration) {
    let def = &step.def.step;
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        run.events.emit(Event::StepStarted {
            client: run.client(),
            host: run.host.name.clone(),
            index,
            phase: step.phase().to_string(),
            name: def.name.clone(),
            attempt: attempts,
        });
        let attempt = attempt_step(run, session, step, vars).await;
        // A lost connection is not retried on the dead session: the caller
        // reconnects to roll back.
        if attempt.status == StepStatus::Ok
            || attempts > def.retries
            || attempt.lost
            || attempt.reboot_refused
            || run.stop.is_cancelled()
        {
            return (attempt, attempts, started.elapsed());
        }
        tokio::select! {
            _ = tokio::time::sleep(def.retry_delay.0) => {}
            _ = run.stop.cancelled() => return (attempt, attempts, started.elapsed()),
        }
    }
}

pub(super) async fn attempt_step(
    run: &HostRun<'_>,
    session: &dyn Session,
    step: &PlannedStep,
    vars: &mut Map<String, Value>,
) -> Attempt {
    let def: &Step = &step.def.step;
    let action = match resolve_action(run, step, vars) {
        Ok(action) => action,
        Err(e) => return failed(None, e),
    };
    let (execution, stopped) = match perform(run, session, &def.name, &action, def.r#become).await {
        Ok(Performed {
            reboot_refused: Some(why),
            ..
        }) => {
            return Attempt {
                reboot_refused: true,
                ..failed(None, why)
            };
        }
        Ok(performed) => (performed.execution, performed.stopped),
        Err(e) => {
            let lost = matches!(
                e,
                TransportError::ConnectionLost(_) | TransportError::Unreachable(_)
            );
            return Attempt {
                lost,
                ..failed(None, e.to_string())
            };
        }
    };
    let mut attempt = Attempt {
        lost: false,
        reboot_refused: false,
        status: StepStatus::Ok,
        exit_code: None,
        detail: None,
        stdout: execution.stdout,
        stderr: execution.stderr,
    };
    match execution.status {
        ExitStatus::Code(code) => {
            attempt.exit_code = Some(code);
            // A reboot code is a success that asks for a reboot (msiexec 3010, 1641).
            if !def.ok_codes.contains(&code) && !def.reboot_codes.contains(&code) {
                attempt.status = StepStatus::Failed;
                attempt.detail = Some(format!(
                    "exited with {code} (ok: {:?}){}",
                    def.ok_codes,
                    // Masked before it is cut to a line: one line of a
                    // secret is only a part of its value.
                    last_line(&run.redactor.redact_to_text(&attempt.stderr))
                ));
                return attempt;
            }
            if def.reboot_codes.contains(&code) {
                if let Err(why) = super::reboot::permit(run, session, &def.name).await {
                    attempt.status = StepStatus::Failed;
                    attempt.reboot_refused = true;
                    attempt.detail = Some(format!(
                        "exited with {code}, which asks for a reboot: {why}"
                    ));
                    return attempt;
                }
                if let Err(e) = session.reboot(action.reboot_wait()).await {
                    // A host that did not come back is judged as after a
                    // `reboot:` step: reconnect before any rollback.
                    attempt.lost = matches!(
                        e,
                        TransportError::ConnectionLost(_) | TransportError::Unreachable(_)
                    );
                    attempt.status = StepStatus::Failed;
                    attempt.detail = Some(format!(
                        "exited with {code}, which asks for a reboot, and the reboot failed: {e}"
                    ));
                    return attempt;
                }
            }
        }
        ExitStatus::Signal(signal) => {
            attempt.status = StepStatus::Failed;
            attempt.detail = Some(format!("was killed by signal {signal}"));
            return attempt;
        }
        ExitStatus::TimedOut => {
            attempt.status = StepStatus::TimedOut;
            let limit = action.timeout.map(HumanDuration).map(|t| t.to_string());
            attempt.detail = Some(format!(
                "timed out after {}{stopped}",
                limit.unwrap_or_default()
            ));
            return attempt;
        }
    }
    if let Some(capture) = &def.capture {
        match capture::parse_output(capture.parse, &attempt.stdout) {
            Ok(value) => {
                vars.insert(capture.name.clone(), value);
            }
            Err(e) => {
                attempt.status = StepStatus::Failed;
                attempt.detail = Some(format!(
                    "output could not be captured as `{}`: {e}",
                    capture.name
                ));
                return attempt;
            }
        }
    }
    if let Some(until) = &def.until {
        let mut with_result = vars.clone();
        with_result.insert(
            "result".into(),
            json!({
                "exit_code": attempt.exit_code,
                "stdout": attempt.stdout.to_text(),
                "stderr": attempt.stderr.to_text(),
            }),
        );
        match condition(run, &format!("{}.until", step.def.key), &with_result) {
            Ok(true) => {}
            Ok(false) => {
                attempt.status = StepStatus::Failed;
                attempt.detail = Some(format!("until `{}` is not met", until.text.trim()));
            }
            Err(e) => {
                attempt.status = StepStatus::Failed;
                attempt.detail = Some(format!(
                    "until `{}` could not be decided: {e}",
                    until.text.trim()
                ));
            }
        }
    }
    attempt
}

fn last_line(stderr: &str) -> String {
    match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

fn failed(exit_code: Option<i32>, detail: String) -> Attempt {
    Attempt {
        lost: false,
        reboot_refused: false,
        status: StepStatus::Failed,
        exit_code,
        detail: Some(detail),
        stdout: BoundedOutput::default(),
        stderr: BoundedOutput::default(),
    }
}

/// What a record keeps of a stream: its head and tail, redacted.
pub(super) fn kept(run: &HostRun<'_>, output: &BoundedOutput) -> String {
    output.excerpt(|bytes| run.redactor.redact_to_text(bytes))
}
