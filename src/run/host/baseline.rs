//! Running a host's baseline probes: once before its first step, and
//! again after its last, then comparing ([`crate::run::baseline`]).
//!
//! A probe is attempted by the same rules as a step ([`super::attempt`]:
//! its action, timeout, exit codes, `become`), but its output is kept as
//! items, not captured into variables: probes are read-only and nothing
//! later depends on them. What they saw is emitted as events (the journal
//! keeps the "before", so a resumed host compares with the host as it was
//! before it was first touched), never printed.

use serde_json::{Map, Value};

use super::attempt::attempt_step;
use super::context::HostRun;
use crate::load::OnRegression;
use crate::run::baseline::{ProbeDiff, ProbeSnapshot, compare, items};
use crate::run::events::{Event, StepStatus};
use crate::transport::Session;
use crate::transport::output::CAPTURE_LIMIT;

/// The connection broke while a probe ran: the message for the record.
pub(super) struct Lost(pub String);

/// Runs every probe of the host; a probe that fails is recorded as such.
async fn probe_all(run: &HostRun<'_>, session: &dyn Session) -> Result<Vec<ProbeSnapshot>, Lost> {
    let mut snapshots = Vec::new();
    for planned in &run.host.baseline {
        // Probes read no captured value and capture none.
        let mut vars: Map<String, Value> = run.host.vars();
        let attempt = attempt_step(run, session, &planned.step, &mut vars).await;
        let name = planned.probe.name.clone();
        let on_regression = planned.probe.on_regression;
        if attempt.lost {
            return Err(Lost(format!(
                "baseline probe `{name}`: {}",
                attempt.detail.unwrap_or_default()
            )));
        }
        let result = if attempt.status != StepStatus::Ok {
            Err(attempt.detail.unwrap_or_else(|| "failed".into()))
        } else {
            match attempt.stdout.complete() {
                Some(bytes) => items(&planned.probe, &run.redactor.redact_to_text(bytes), |s| {
                    run.redactor.redact(s)
                }),
                None => Err(format!(
                    "the output is {} bytes, more than the {} KiB a probe may print",
                    attempt.stdout.total_len(),
                    CAPTURE_LIMIT / 1024
                )),
            }
        };
        snapshots.push(match result {
            Ok(items) => ProbeSnapshot {
                probe: name,
                on_regression,
                items: Some(items),
                error: None,
            },
            Err(error) => ProbeSnapshot {
                probe: name,
                on_regression,
                items: None,
                error: Some(run.redactor.redact(&error)),
            },
        });
    }
    Ok(snapshots)
}

/// Takes the "before" baseline and emits it. `Err` with the host's error
/// when a `fail` probe could not run: nothing has changed yet, so the host
/// stops here, with no rollback.
pub(super) async fn take_before(
    run: &HostRun<'_>,
    session: &dyn Session,
) -> Result<Vec<ProbeSnapshot>, String> {
    let snapshots = probe_all(run, session).await.map_err(|Lost(e)| e)?;
    run.events.emit(Event::BaselineTaken {
        client: run.client(),
        host: run.host.name.clone(),
        probes: snapshots.clone(),
    });
    let failed: Vec<String> = snapshots
        .iter()
        .filter(|s| s.error.is_some() && s.on_regression == OnRegression::Fail)
        .map(|s| {
            format!(
                "baseline probe `{}` failed before any change: {}",
                s.probe,
                s.error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(snapshots)
    } else {
        Err(failed.join("; "))
    }
}

/// What the host's end of the run comes to.
pub(super) enum After {
    /// Nothing a `fail` probe refuses.
    Passed,
    /// Regressions on `fail` probes: the host's verify fails, with this error.
    Regressed(String),
    Lost(String),
}

/// Takes the "after" baseline, compares it with `before`, emits the
/// difference and judges it.
pub(super) async fn compare_after(
    run: &HostRun<'_>,
    session: &dyn Session,
    before: &[ProbeSnapshot],
) -> After {
    let after = match probe_all(run, session).await {
        Ok(after) => after,
        Err(Lost(e)) => return After::Lost(e),
    };
    let diffs: Vec<ProbeDiff> = run
        .host
        .baseline
        .iter()
        .map(|planned| {
            let probe = &planned.probe;
            let was = before.iter().find(|s| s.probe == probe.name);
            let now = after.iter().find(|s| s.probe == probe.name);
            match (was, now) {
                (
                    Some(ProbeSnapshot {
                        items: Some(was), ..
                    }),
                    Some(ProbeSnapshot {
                        items: Some(now), ..
                    }),
                ) => compare(probe, was, now),
                // A probe that failed before (a `warn` one: a `fail` one
                // stopped the host) cannot be compared: say so.
                (Some(was @ ProbeSnapshot { items: None, .. }), _) => ProbeDiff::recorded(was),
                (_, Some(now)) => {
                    let mut diff = ProbeDiff::recorded(now);
                    diff.error = Some(match &now.error {
                        Some(e) => format!("failed after the change: {e}"),
                        None => "was not taken before the change".into(),
                    });
                    diff.status = crate::run::baseline::BaselineStatus::Error;
                    diff.items_before = was.and_then(|w| w.items.as_ref().map(Vec::len));
                    diff.items_after = now.items.as_ref().map(Vec::len);
                    diff
                }
                (_, None) => ProbeDiff {
                    error: Some("did not run after the change".into()),
                    ..ProbeDiff::recorded(&ProbeSnapshot {
                        probe: probe.name.clone(),
                        on_regression: probe.on_regression,
                        items: None,
                        error: Some(String::new()),
                    })
                },
            }
        })
        .collect();
    run.events.emit(Event::BaselineCompared {
        client: run.client(),
        host: run.host.name.clone(),
        probes: diffs.clone(),
    });
    let failing: Vec<String> = diffs
        .iter()
        .filter(|d| d.fails_host())
        .map(ProbeDiff::summary)
        .collect();
    if failing.is_empty() {
        After::Passed
    } else {
        After::Regressed(format!(
            "verify: the baseline changed: {}",
            failing.join("; ")
        ))
    }
}
