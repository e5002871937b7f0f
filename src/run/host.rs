//! One host's run: its steps in order, then, if one fails, the rollback of
//! everything done so far and the playbook's `on_failure` steps.
//!
//! The rule this module exists to keep: an endpoint is never left without
//! protection and without a record. Every path out of [`run_host`] emits a
//! `HostFinished`; a step that fails after its retries, and an interruption
//! that catches a host half migrated, both roll the host back before it is
//! let go.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::capture;
use super::events::{CaptureRecord, Event, Events, HostStatus, StepRecord, StepStatus};
use super::perform::perform;
use super::rollback::roll_back;
use crate::load::{Mark, Step};
use crate::plan::{HostPlan, LiveRedactor, Plan, PlannedStep, RenderedAction};
use crate::transport::{BoundedOutput, Connectors, ExitStatus, Session, TransportError};

pub(crate) struct HostRun<'a> {
    pub plan: &'a Plan,
    pub host: &'a HostPlan,
    pub events: &'a Events,
    pub redactor: &'a LiveRedactor,
    /// The first Ctrl-C: start no further step.
    pub stop: &'a CancellationToken,
    /// `--check`: run only check_safe steps; say what the others would do.
    pub check: bool,
    /// Resuming a host caught mid-way: what it had completed.
    pub resume: Option<super::Carried>,
}

/// What a step attempt came to.
pub(super) struct Attempt {
    /// The connection broke: the step's outcome on the host is unknown.
    pub(super) lost: bool,
    pub(super) status: StepStatus,
    pub(super) exit_code: Option<i32>,
    pub(super) detail: Option<String>,
    /// What the transport kept: bounded, whatever the host sent.
    pub(super) stdout: BoundedOutput,
    pub(super) stderr: BoundedOutput,
}

impl HostRun<'_> {
    pub(super) fn client(&self) -> String {
        self.host.client.clone()
    }

    pub(super) fn finish(
        &self,
        status: HostStatus,
        error: Option<String>,
        gap: Option<Duration>,
    ) -> HostStatus {
        self.events.emit(Event::HostFinished {
            client: self.client(),
            host: self.host.name.clone(),
            status,
            error: error.map(|e| self.redactor.redact(&e)),
            protection_gap_ms: gap.map(|g| g.as_millis() as u64),
        });
        status
    }
}

/// Tracks how long the endpoint went without protection, from the steps
/// marked `protection_off` / `protection_on`.
#[derive(Default)]
pub(super) struct Gap {
    since: Option<Instant>,
    total: Option<Duration>,
}

impl Gap {
    fn off(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }
    pub(super) fn on(&mut self) {
        if let Some(since) = self.since.take() {
            *self.total.get_or_insert(Duration::ZERO) += since.elapsed();
        }
    }
    pub(super) fn end(mut self) -> Option<Duration> {
        self.on();
        self.total
    }
}

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

async fn connect(
    host: &HostPlan,
    connectors: &Connectors,
) -> Result<Box<dyn Session>, TransportError> {
    let connector = connectors.for_kind(host.target.kind)?;
    // The transports bound their own handshakes; this is the backstop
    // that keeps one silent host from holding a fork forever.
    let limit = host.target.connect_timeout * 2 + Duration::from_secs(5);
    match tokio::time::timeout(limit, connector.connect(&host.target)).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Unreachable(format!(
            "host {}: no connection after {}s",
            host.name,
            limit.as_secs()
        ))),
    }
}

async fn run_steps(
    run: &HostRun<'_>,
    session: &dyn Session,
    connectors: &Connectors,
) -> HostStatus {
    let mut vars: Map<String, Value> = run.host.vars.clone();
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
                return match connect(run.host, connectors).await {
                    Ok(fresh) => {
                        let status = roll_back(run, fresh.as_ref(), &to_undo, &mut vars, error, gap).await;
                        fresh.close().await;
                        status
                    }
                    Err(e) => run.finish(
                        HostStatus::Unreachable,
                        Some(format!(
                            "{error}; could not reconnect to roll back ({e}): a person must check this host"
                        )),
                        gap.end(),
                    ),
                };
            }
            return roll_back(run, session, &to_undo, &mut vars, error, gap).await;
        }
        if def.marks == Some(Mark::ProtectionOn) {
            gap.on();
        }
        changed |= !def.check_safe;
        done.push(step);
    }
    run.finish(HostStatus::Succeeded, None, gap.end())
}

/// Steps run again on resume, whatever they did before.
fn is_precheck(step: &PlannedStep) -> bool {
    step.def.step.check_safe || step.phase() == "precheck"
}

pub(super) fn skipped(detail: String) -> Attempt {
    Attempt {
        lost: false,
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
        .condition(key, &context(vars), &run.plan.playbook.source)
        .map_err(|e| e.message)
}

fn resolve_action(
    run: &HostRun<'_>,
    step: &PlannedStep,
    vars: &Map<String, Value>,
) -> Result<RenderedAction, String> {
    if let Some(action) = &step.action {
        return Ok(action.clone());
    }
    crate::plan::render_action(
        &run.plan.templates,
        &run.plan.playbook.source,
        &run.plan.playbook.dir(),
        &step.def,
        &context(vars),
    )
    .map_err(|e| format!("template at line {}: {}", e.at.line, e.message))
}

/// Runs a step until it succeeds (and its `until` holds) or its retries
/// are spent. Returns the last attempt, the number of attempts and the time.
async fn run_with_retries(
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
    let execution = match perform(run, session, &action, def.timeout.map(|t| t.0)).await {
        Ok(execution) => execution,
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
                    last_line(&attempt.stderr.to_text())
                ));
                return attempt;
            }
            if def.reboot_codes.contains(&code) {
                run.events.emit(Event::Rebooting {
                    client: run.client(),
                    host: run.host.name.clone(),
                });
                let timeout = def
                    .timeout
                    .map(|t| t.0)
                    .unwrap_or(crate::plan::DEFAULT_REBOOT_TIMEOUT);
                if let Err(e) = session.reboot(timeout).await {
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
            attempt.detail = Some(format!(
                "timed out after {} and was killed",
                def.timeout.map(|t| t.to_string()).unwrap_or_default()
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
        status: StepStatus::Failed,
        exit_code,
        detail: Some(detail),
        stdout: BoundedOutput::default(),
        stderr: BoundedOutput::default(),
    }
}

/// What a record keeps of a stream: its head and tail, redacted.
pub(super) fn kept(run: &HostRun<'_>, output: &BoundedOutput) -> String {
    output.excerpt(|text| run.redactor.redact(text))
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
