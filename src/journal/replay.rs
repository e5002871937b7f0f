//! Reading a run back from its events: the report as it stands, and for
//! `resume`, where each host stands.
//!
//! A host's latest outcome decides:
//! - succeeded (or skipped): done, never touched again;
//! - its last event is `HostStarted` (a crash or a second Ctrl-C caught it
//!   mid-way): it goes on after the steps it completed, with what they
//!   captured. Its completed steps add up over every process that ran it,
//!   since a resumed host does not record again the steps it carries over;
//! - its rollback failed, or the connection broke in the middle of one of
//!   its steps and could not be re-established: left alone, so the signal
//!   that a person must look is never erased by a later attempt;
//! - anything else (failed and rolled back, unreachable before any step,
//!   not started): runs again from the start.

use std::collections::HashMap;

use crate::report::run_json::Report;
use crate::run::{Carried, Event, HostResume, HostStatus, StepStatus};

pub struct Replay {
    pub report: Report,
    pub hosts: HashMap<String, HostResume>,
}

/// A host's progress since it last finished.
#[derive(Default)]
struct InFlight {
    carried: Carried,
    /// Some step was started since the host last started: it may have
    /// changed the host.
    touched: bool,
}

pub fn replay(events: &[(String, Event)]) -> Replay {
    let mut report = Report::default();
    let mut hosts: HashMap<String, HostResume> = HashMap::new();
    let mut in_flight: HashMap<String, InFlight> = HashMap::new();
    for (time, event) in events {
        report.apply(event, time);
        match event {
            Event::HostStarted { host, .. } => {
                // Started again by a resume without having finished: its
                // earlier progress still stands.
                in_flight.entry(host.clone()).or_default();
            }
            Event::StepStarted { host, .. } => {
                if let Some(progress) = in_flight.get_mut(host) {
                    progress.touched = true;
                }
            }
            Event::StepFinished { host, step, .. } => {
                let Some(progress) = in_flight.get_mut(host) else {
                    continue;
                };
                // Only a step that ran to success counts as done; a skipped
                // one is decided again, with fresh captures.
                let journaled = match &step.capture {
                    None => true,
                    Some(capture) => match &capture.value {
                        Some(value) => {
                            progress
                                .carried
                                .captured
                                .insert(capture.name.clone(), value.clone());
                            true
                        }
                        None => false, // its value was not written down: run it again
                    },
                };
                if step.status == StepStatus::Ok && journaled {
                    progress.carried.completed.insert(step.index);
                    let snapshot = progress.carried.captured.clone();
                    progress.carried.captured_at.insert(step.index, snapshot);
                }
            }
            Event::BaselineTaken { host, probes, .. } => {
                if let Some(progress) = in_flight.get_mut(host) {
                    progress.carried.baseline_before = Some(probes.clone());
                }
            }
            Event::HostFinished { host, status, .. } => {
                let progress = in_flight.remove(host);
                let resume = match status {
                    HostStatus::Succeeded | HostStatus::Skipped => HostResume::Done,
                    HostStatus::RollbackFailed => HostResume::Leave,
                    HostStatus::Unreachable if progress.is_some_and(|p| p.touched) => {
                        HostResume::Leave
                    }
                    _ => HostResume::Fresh,
                };
                hosts.insert(host.clone(), resume);
            }
            Event::HostNotStarted { host, .. } if !in_flight.contains_key(host) => {
                hosts.insert(host.clone(), HostResume::Fresh);
            }
            _ => {}
        }
    }
    // A run killed outright never said how it ended: say it for the hosts
    // it left mid-way.
    if report.status.is_none() {
        for client in &mut report.clients {
            for host in client
                .hosts
                .iter_mut()
                .filter(|h| in_flight.contains_key(&h.name))
            {
                host.error = Some(
                    "the run stopped while this host was running; resume the run to finish it"
                        .into(),
                );
            }
        }
    }
    for (host, progress) in in_flight {
        hosts.insert(host, HostResume::Continue(progress.carried));
    }
    Replay { report, hosts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{CaptureRecord, StepRecord};

    fn at(event: Event) -> (String, Event) {
        ("2026-11-22T08:00:00Z".into(), event)
    }

    fn started(host: &str) -> (String, Event) {
        at(Event::HostStarted {
            client: "c".into(),
            host: host.into(),
            wave: 1,
        })
    }

    fn step(
        host: &str,
        index: usize,
        status: StepStatus,
        capture: Option<CaptureRecord>,
    ) -> Vec<(String, Event)> {
        vec![
            at(Event::StepStarted {
                client: "c".into(),
                host: host.into(),
                index,
                phase: "p".into(),
                name: format!("s{index}"),
                attempt: 1,
            }),
            at(Event::StepFinished {
                client: "c".into(),
                host: host.into(),
                step: StepRecord {
                    phase: "p".into(),
                    name: format!("s{index}"),
                    index,
                    status,
                    exit_code: Some(0),
                    attempts: 1,
                    duration_ms: 1,
                    detail: None,
                    stdout: None,
                    stderr: None,
                    check_safe: false,
                    capture,
                },
            }),
        ]
    }

    fn finished(host: &str, status: HostStatus) -> (String, Event) {
        at(Event::HostFinished {
            client: "c".into(),
            host: host.into(),
            status,
            error: None,
            protection_gap_ms: None,
        })
    }

    #[test]
    fn progress_adds_up_over_several_resumes() {
        let mut events = vec![started("h")];
        events.extend(step("h", 0, StepStatus::Ok, None));
        events.extend(step(
            "h",
            1,
            StepStatus::Ok,
            Some(CaptureRecord {
                name: "v".into(),
                value: Some("1.2".into()),
            }),
        ));
        // Resumed: the host starts again, runs step 2, and is killed again.
        events.push(started("h"));
        events.extend(step("h", 2, StepStatus::Ok, None));
        let replay = replay(&events);
        let HostResume::Continue(carried) = &replay.hosts["h"] else {
            panic!("{:?}", replay.hosts["h"]);
        };
        assert_eq!(
            carried.completed.iter().copied().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(carried.captured["v"], "1.2");
    }

    #[test]
    fn skipped_steps_and_unjournaled_captures_are_not_done() {
        let mut events = vec![started("h")];
        events.extend(step("h", 0, StepStatus::Skipped, None));
        events.extend(step(
            "h",
            1,
            StepStatus::Ok,
            Some(CaptureRecord {
                name: "secret".into(),
                value: None,
            }),
        ));
        events.extend(step("h", 2, StepStatus::Ok, None));
        let HostResume::Continue(carried) = &replay(&events).hosts["h"] else {
            panic!();
        };
        assert_eq!(carried.completed.iter().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn hosts_that_need_a_person_are_left_alone() {
        let mut events = vec![started("rb"), finished("rb", HostStatus::RollbackFailed)];
        events.push(started("lost"));
        events.extend(step("lost", 0, StepStatus::Failed, None));
        events.push(finished("lost", HostStatus::Unreachable));
        events.extend([started("down"), finished("down", HostStatus::Unreachable)]);
        events.extend([started("ok"), finished("ok", HostStatus::Succeeded)]);
        events.extend([started("rolled"), finished("rolled", HostStatus::Failed)]);
        let hosts = replay(&events).hosts;
        assert_eq!(hosts["rb"], HostResume::Leave);
        assert_eq!(hosts["lost"], HostResume::Leave);
        assert_eq!(
            hosts["down"],
            HostResume::Fresh,
            "never reached: nothing changed"
        );
        assert_eq!(hosts["ok"], HostResume::Done);
        assert_eq!(hosts["rolled"], HostResume::Fresh);
    }
}
