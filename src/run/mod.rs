//! Run: execute a plan over the transports, emitting events.
//!
//! [`scheduler`] decides which host runs when (waves, budgets, pauses,
//! parallelism); [`host`] runs one host's steps and rollback; [`capture`]
//! turns output into values. Nothing here prints: everything a person or
//! a file sees is drawn by an observer of [`events`].
//!
//! The run decides its own outcome ([`RunOutcome`]), and with it the exit
//! code: reporters render the status the `RunFinished` event carries and
//! decide nothing.

pub mod baseline;
pub mod capture;
pub mod clock;
pub mod events;
mod host;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

pub use clock::Clock;
pub use events::{
    CaptureRecord, ClientStatus, Event, Events, HostStatus, Observer, Recorder, RunStatus,
    StepRecord, StepStatus, name_of, timestamp,
};
pub use scheduler::{AlwaysYes, Confirm, Interrupt};

use crate::plan::Plan;
use crate::transport::Connectors;

/// Where a host stands when a run is resumed.
#[derive(Debug, Clone, PartialEq)]
pub enum HostResume {
    /// Succeeded or skipped: not touched again.
    Done,
    /// Runs from its first step.
    Fresh,
    /// Caught mid-way: goes on after what it had completed.
    Continue(Carried),
    /// Needs a person (its rollback failed, or the connection broke
    /// mid-step): not touched by resume, and keeps its status.
    Leave,
}

/// What a host caught mid-way had done before the run stopped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carried {
    /// Indices of the steps that completed (and whose captures, if any,
    /// were journaled). They are not repeated, except precheck steps.
    pub completed: std::collections::BTreeSet<usize>,
    /// The values those steps captured (the latest of each).
    pub captured: serde_json::Map<String, serde_json::Value>,
    /// For each completed step, the captured values as they were when it
    /// ran: its rollback needs those, not what a re-run precheck sees now.
    pub captured_at: std::collections::BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
    /// The baseline taken before the host was first touched, to compare with.
    pub baseline_before: Option<Vec<baseline::ProbeSnapshot>>,
}

/// Per host, where a resumed run picks up.
pub type Resume = std::collections::HashMap<String, HostResume>;

pub struct RunOptions {
    pub run_id: String,
    pub forks: usize,
    pub check: bool,
    /// `orchestrate rehearse`: said in the events, and so in every report.
    pub rehearsal: bool,
    pub confirm: Arc<dyn Confirm>,
    /// `Some` when this continues an earlier run (`orchestrate resume`).
    pub resume: Option<Resume>,
    /// Resuming: each host's status as the run's earlier processes left
    /// it. A host left `rollback_failed` keeps the whole run so.
    pub earlier: HashMap<String, HostStatus>,
    /// The time of day, for reboot windows.
    pub clock: Clock,
}

/// How a run ended: the status its `RunFinished` event carries, and the
/// exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: RunStatus,
}

impl RunOutcome {
    /// The process exit code (README, "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self.status {
            RunStatus::Succeeded => 0,
            RunStatus::Failed | RunStatus::Halted => 1,
            RunStatus::RollbackFailed => 3,
            RunStatus::Interrupted => 130,
        }
    }
}

/// Runs `plan` to its end (or its interruption) and emits every event.
pub async fn execute(
    plan: Arc<Plan>,
    connectors: Connectors,
    options: RunOptions,
    events: Arc<Events>,
    interrupt: Interrupt,
) -> RunOutcome {
    let started = chrono::Utc::now();
    if options.resume.is_some() {
        events.emit_at(
            started,
            Event::RunResumed {
                run_id: options.run_id.clone(),
                resumed_at: timestamp(started),
            },
        );
    } else {
        events.emit_at(started, {
            let mut event = run_started(&plan, &options.run_id, options.check, started);
            if let Event::RunStarted { rehearsal, .. } = &mut event {
                *rehearsal = options.rehearsal;
            }
            event
        });
    }
    let scheduler = Arc::new(scheduler::Scheduler {
        resume: options.resume.map(Arc::new),
        redactor: Arc::new(crate::plan::LiveRedactor::new(Arc::clone(&plan.secrets))),
        plan,
        connectors,
        events: Arc::clone(&events),
        forks: Arc::new(Semaphore::new(options.forks.max(1))),
        confirm: options.confirm,
        interrupt: interrupt.clone(),
        check: options.check,
        clock: options.clock,
        hosts: Mutex::new(options.earlier),
    });
    let clients = tokio::select! {
        clients = Arc::clone(&scheduler).run() => clients,
        _ = interrupt.hard.cancelled() => Vec::new(),
    };
    let status = if interrupt.hard.is_cancelled() {
        RunStatus::Interrupted
    } else {
        run_status(&clients)
    };
    // A rollback that failed anywhere, in this process or an earlier one
    // of the same run, outranks every other outcome: a person must look.
    let hosts = scheduler.hosts.lock().unwrap_or_else(|p| p.into_inner());
    let status = if hosts.values().any(|s| *s == HostStatus::RollbackFailed) {
        RunStatus::RollbackFailed
    } else {
        status
    };
    drop(hosts);
    let finished = chrono::Utc::now();
    events.emit_at(
        finished,
        Event::RunFinished {
            status,
            finished_at: timestamp(finished),
        },
    );
    RunOutcome { status }
}

/// The `RunStarted` event of `plan`: every client, its waves and hosts.
/// Also what `run --queue` journals for the workers that run it.
pub fn run_started(
    plan: &Plan,
    run_id: &str,
    check: bool,
    started: chrono::DateTime<chrono::Utc>,
) -> Event {
    Event::RunStarted {
        run_id: run_id.to_string(),
        playbook: plan.playbook_path.display().to_string(),
        inventory: plan.inventory_path.display().to_string(),
        started_at: timestamp(started),
        check,
        rehearsal: false,
        clients: plan
            .clients
            .iter()
            .map(|c| events::ClientInfo {
                name: c.name.clone(),
                waves: c.waves.clone(),
                allowed_failures: c.allowed_failures,
                hosts: c
                    .hosts
                    .iter()
                    .map(|h| events::HostInfo {
                        name: h.name.clone(),
                        wave: h.wave,
                        skipped: h.skipped.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A run's status from its clients' statuses (a rollback that failed
/// outranks it: see [`execute`]).
pub fn run_status(clients: &[(String, ClientStatus)]) -> RunStatus {
    let any = |s: ClientStatus| clients.iter().any(|(_, c)| *c == s);
    if any(ClientStatus::Interrupted) {
        RunStatus::Interrupted
    } else if any(ClientStatus::Halted) {
        RunStatus::Halted
    } else if any(ClientStatus::Failed) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    }
}

pub fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// A run id: sortable by time, unique enough for one MSP's journal.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        hasher.finish() & 0xffff
    )
}
