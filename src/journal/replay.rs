//! Reading a run back from its events: the report as it stands, and for
//! `resume`, where each host stands.
//!
//! A host's latest outcome decides: succeeded (or skipped) hosts are done
//! and never touched again; a host whose last event is `HostStarted` was
//! caught mid-way by a crash and continues after the steps it completed;
//! every other host (failed and rolled back, unreachable, not started) runs
//! from the start.

use std::collections::{BTreeSet, HashMap};

use crate::report::run_json::Report;
use crate::run::{Event, HostResume, HostStatus, StepStatus};

pub struct Replay {
    pub report: Report,
    pub hosts: HashMap<String, HostResume>,
}

pub fn replay(events: &[(String, Event)]) -> Replay {
    let mut report = Report::default();
    let mut hosts: HashMap<String, HostResume> = HashMap::new();
    let mut in_flight: HashMap<String, BTreeSet<usize>> = HashMap::new();
    for (time, event) in events {
        report.apply(event, time);
        match event {
            Event::HostStarted { host, .. } => {
                in_flight.insert(host.clone(), BTreeSet::new());
            }
            Event::StepFinished { host, step, .. } => {
                if matches!(step.status, StepStatus::Ok | StepStatus::Skipped)
                    && let Some(done) = in_flight.get_mut(host)
                {
                    done.insert(step.index);
                }
            }
            Event::HostFinished { host, status, .. } => {
                in_flight.remove(host);
                let resume = match status {
                    HostStatus::Succeeded | HostStatus::Skipped => HostResume::Done,
                    _ => HostResume::Fresh,
                };
                hosts.insert(host.clone(), resume);
            }
            Event::HostNotStarted { host, .. } => {
                hosts.insert(host.clone(), HostResume::Fresh);
            }
            _ => {}
        }
    }
    for (host, completed) in in_flight {
        hosts.insert(host, HostResume::Continue { completed });
    }
    // A run killed mid-way never said how it ended.
    if report.status.is_none() {
        for client in &mut report.clients {
            for host in &mut client.hosts {
                if matches!(hosts.get(&host.name), Some(HostResume::Continue { .. })) {
                    host.error = Some("the run stopped while this host was running".into());
                }
            }
        }
    }
    Replay { report, hosts }
}
