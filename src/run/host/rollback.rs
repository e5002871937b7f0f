//! Rolling a host back: the `rollback` steps of everything it did, newest
//! first, then the playbook's `on_failure` steps.
//!
//! Every rollback step is tried even when one fails (each may restore a
//! different part of the protection), and a host whose rollback did not
//! fully succeed is `rollback_failed`: a person must look at it. One that
//! was rolled back by a step marked `restores_unsupported_product` (it put
//! back a product that no longer gets updates) is
//! `rolled_back_to_unsupported_product`, not `failed`: protected today, but
//! less every day.
//!
//! It attempts steps by the same rules as the run ([`super::attempt`]) and
//! is called by the host's run ([`super`]), never the other way round.

use serde_json::{Map, Value};

use super::attempt::{Attempt, attempt_step, kept, skip_reason, skipped};
use super::context::{Gap, HostRun};
use crate::load::Mark;
use crate::plan::PlannedStep;
use crate::run::events::{Event, HostStatus, RollbackRecord, StepStatus};
use crate::transport::{BoundedOutput, Session};

/// Undoes `done` (the failed step last) in reverse order, then runs the
/// playbook's `on_failure` steps. Every rollback step is tried even when
/// one fails: each may restore a different part of the protection.
pub(super) async fn roll_back(
    run: &HostRun<'_>,
    session: &dyn Session,
    done: &[&PlannedStep],
    vars: &mut Map<String, Value>,
    reason: String,
    gap: Gap,
) -> HostStatus {
    roll_back_as(run, session, done, vars, reason, gap, false).await
}

/// [`roll_back`], or, with `in_doubt`, a rollback when it is not known
/// that the failed step stopped on the host (a lost connection's command
/// could not be shown killed): the rollback is still tried, for whatever
/// protection it restores, but the host is `rollback_failed` however it
/// went, since the step may yet finish after it.
pub(super) async fn roll_back_as(
    run: &HostRun<'_>,
    session: &dyn Session,
    done: &[&PlannedStep],
    vars: &mut Map<String, Value>,
    reason: String,
    mut gap: Gap,
    in_doubt: bool,
) -> HostStatus {
    run.events.emit(Event::RollbackStarted {
        client: run.client(),
        host: run.host.name.clone(),
        reason: run.redactor.redact(&reason),
    });
    let mut undone = Undone::default();
    for step in done.iter().rev() {
        // A step carried over from before a resume is undone with the
        // values captured when it ran, not with the precheck's fresh ones
        // (which see the host as that step left it).
        let carried = run.resume.as_ref().and_then(|r| {
            let index = run.host.steps.iter().position(|s| std::ptr::eq(s, *step))?;
            r.completed
                .contains(&index)
                .then(|| r.captured_at.get(&index))
                .flatten()
        });
        let mut as_it_ran;
        let step_vars: &mut Map<String, Value> = match carried {
            Some(then) => {
                as_it_ran = vars.clone();
                as_it_ran.extend(then.clone());
                &mut as_it_ran
            }
            None => vars,
        };
        for undo in &step.rollback {
            let status = run_rollback_step(run, session, undo, step_vars).await;
            undone.note(undo, status);
        }
    }
    for step in &run.host.on_failure {
        let status = run_rollback_step(run, session, step, vars).await;
        undone.note(step, status);
    }
    let all_ok = !undone.failed;
    if in_doubt {
        let how = if all_ok {
            "the rollback ran"
        } else {
            "the rollback failed too"
        };
        return run.finish(
            HostStatus::RollbackFailed,
            Some(format!("{reason} ({how})")),
            gap.end(),
        );
    }
    if all_ok {
        // Rolled back: protection is what it was before (or on_failure
        // switched some on).
        gap.on();
        match undone.unsupported {
            Some(step) => run.finish(
                HostStatus::RolledBackToUnsupportedProduct,
                Some(format!(
                    "{reason}; rolled back by `{step}` to a product that no longer gets updates: move this host to a supported product"
                )),
                gap.end(),
            ),
            None => run.finish(HostStatus::Failed, Some(reason), gap.end()),
        }
    } else {
        run.finish(
            HostStatus::RollbackFailed,
            Some(format!(
                "{reason}; the rollback failed too: a person must look at this host"
            )),
            gap.end(),
        )
    }
}

/// What the rollback steps came to, as they end.
#[derive(Default)]
struct Undone {
    /// Some step failed (or timed out).
    failed: bool,
    /// The first step marked `restores_unsupported_product` that ran to
    /// success (skipped by its `when`, it put nothing back).
    unsupported: Option<String>,
}

impl Undone {
    fn note(&mut self, step: &PlannedStep, status: StepStatus) {
        let def = &step.def.step;
        match status {
            StepStatus::Ok if def.marks == Some(Mark::RestoresUnsupportedProduct) => {
                self.unsupported.get_or_insert_with(|| def.name.clone());
            }
            StepStatus::Ok | StepStatus::Skipped => {}
            StepStatus::Failed | StepStatus::TimedOut => self.failed = true,
        }
    }
}

/// Runs one rollback step with its retries; returns how it ended.
async fn run_rollback_step(
    run: &HostRun<'_>,
    session: &dyn Session,
    step: &PlannedStep,
    vars: &mut Map<String, Value>,
) -> StepStatus {
    let def = &step.def.step;
    let record = |attempt: &Attempt| {
        let keep = |output: &BoundedOutput| (!def.sensitive).then(|| kept(run, output));
        run.events.emit(Event::RollbackStepFinished {
            client: run.client(),
            host: run.host.name.clone(),
            step: RollbackRecord {
                name: def.name.clone(),
                status: attempt.status,
                exit_code: attempt.exit_code,
                detail: attempt.detail.as_ref().map(|d| run.redactor.redact(d)),
                stdout: keep(&attempt.stdout),
                stderr: keep(&attempt.stderr),
            },
        });
    };
    if let Some(reason) = skip_reason(run, step, vars) {
        record(&skipped(reason));
        return StepStatus::Skipped;
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = attempt_step(run, session, step, vars).await;
        if attempt.status == StepStatus::Ok || attempts > def.retries || attempt.reboot_refused {
            record(&attempt);
            return attempt.status;
        }
        tokio::time::sleep(def.retry_delay.0).await;
    }
}
