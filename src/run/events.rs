//! The one type the runner and everything that watches it share.
//!
//! The runner decides and emits [`Event`]s; it never prints. Progress bars,
//! the JSON-lines log, the final summary, the JSON report and the journal
//! are all [`Observer`]s of the same stream. Events are delivered
//! synchronously, in order, to every observer before the runner goes on,
//! so an observer that writes to disk (the journal) has recorded a step's
//! end before the next step starts: a crash loses nothing that finished.
//!
//! Each event is stamped once, as it is emitted: every observer (the log,
//! the report, the journal) records that one time for it, so they agree to
//! the millisecond whatever each spends on the events before it.
//!
//! Events carry no secret values: commands and output are redacted before
//! they are put in an event, and `sensitive` steps carry no output at all.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::Wave;
use crate::run::baseline::{ProbeDiff, ProbeSnapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    Succeeded,
    /// Failed and rolled back.
    Failed,
    /// Failed and rolled back, by a rollback step marked
    /// `restores_unsupported_product`: the host is protected again, but by
    /// a product that no longer gets updates (Kaspersky for US customers
    /// after 29 September 2024), so its protection decays. A failure like
    /// `failed`, counted apart so that nobody takes it for done.
    RolledBackToUnsupportedProduct,
    RollbackFailed,
    Unreachable,
    Skipped,
    NotStarted,
}

impl HostStatus {
    /// Every status, in the order summaries, charts and tables show them.
    pub const ALL: [HostStatus; 7] = [
        HostStatus::Succeeded,
        HostStatus::Failed,
        HostStatus::RolledBackToUnsupportedProduct,
        HostStatus::RollbackFailed,
        HostStatus::Unreachable,
        HostStatus::NotStarted,
        HostStatus::Skipped,
    ];

    /// Counts against the client's failure budget.
    pub fn is_failure(self) -> bool {
        self.rolled_back() || matches!(self, HostStatus::RollbackFailed | HostStatus::Unreachable)
    }

    /// Failed, and its rollback succeeded.
    pub fn rolled_back(self) -> bool {
        matches!(
            self,
            HostStatus::Failed | HostStatus::RolledBackToUnsupportedProduct
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Succeeded => "succeeded",
            HostStatus::Failed => "failed",
            HostStatus::RolledBackToUnsupportedProduct => "rolled_back_to_unsupported_product",
            HostStatus::RollbackFailed => "rollback_failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Skipped => "skipped",
            HostStatus::NotStarted => "not_started",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Succeeded,
    Failed,
    Halted,
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Halted,
    RollbackFailed,
    Interrupted,
}

/// A host as the run starts: where it stands in its client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub wave: Option<usize>,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    pub name: String,
    pub waves: Vec<Wave>,
    pub hosts: Vec<HostInfo>,
    pub allowed_failures: usize,
}

/// A step's end, as every observer records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub phase: String,
    pub name: String,
    /// Position in the host's step list (0-based), for resume.
    pub index: usize,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub duration_ms: u64,
    /// Why it was skipped, what failed, or what `--check` says it would do.
    pub detail: Option<String>,
    /// Redacted, capped; `None` for sensitive steps.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub check_safe: bool,
    /// What the step captured, so a resumed run can restore it.
    #[serde(default)]
    pub capture: Option<CaptureRecord>,
}

/// A captured value, journaled for resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureRecord {
    pub name: String,
    /// `None` when it must not be written down (a sensitive step, or a
    /// value holding a secret): a resumed run then runs the step again.
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRecord {
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
    /// Redacted, capped; `None` for sensitive steps.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        playbook: String,
        inventory: String,
        started_at: String,
        check: bool,
        /// `orchestrate rehearse`: every host was a simulated endpoint.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rehearsal: bool,
        clients: Vec<ClientInfo>,
    },
    /// `orchestrate resume`: the same run goes on in a new process.
    RunResumed {
        run_id: String,
        resumed_at: String,
    },
    WaveStarted {
        client: String,
        wave: usize,
        hosts: Vec<String>,
    },
    WaveFinished {
        client: String,
        wave: usize,
        failed_so_far: usize,
        allowed_failures: usize,
    },
    /// Waiting between waves (a duration, or for confirmation).
    Paused {
        client: String,
        next_wave: usize,
        reason: String,
    },
    ClientHalted {
        client: String,
        reason: String,
    },
    HostStarted {
        client: String,
        host: String,
        wave: usize,
    },
    StepStarted {
        client: String,
        host: String,
        index: usize,
        phase: String,
        name: String,
        attempt: u32,
    },
    StepFinished {
        client: String,
        host: String,
        step: StepRecord,
    },
    RollbackStarted {
        client: String,
        host: String,
        reason: String,
    },
    RollbackStepFinished {
        client: String,
        host: String,
        step: RollbackRecord,
    },
    /// A reboot a step asked for waits, by the host's reboot policy: for
    /// its maintenance window (`until` it opens) or for the operator.
    RebootWaiting {
        client: String,
        host: String,
        reason: String,
        until: Option<String>,
    },
    /// The host reboots now (a `reboot:` step, a `reboot_codes` exit),
    /// with who was logged on to it just before: each session as
    /// `name (session, state)`, or why that is not known.
    Rebooting {
        client: String,
        host: String,
        /// The step that asked for the reboot (empty in journals written
        /// before this was recorded).
        #[serde(default)]
        step: String,
        #[serde(default)]
        logged_on: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logged_on_unknown: Option<String>,
    },
    /// The baseline probes ran before the host's first step (and before
    /// anything changed): what they saw, journaled for the comparison.
    BaselineTaken {
        client: String,
        host: String,
        probes: Vec<ProbeSnapshot>,
    },
    /// The baseline probes ran again after the host's last step: what
    /// differs, probe by probe.
    BaselineCompared {
        client: String,
        host: String,
        probes: Vec<ProbeDiff>,
    },
    HostFinished {
        client: String,
        host: String,
        status: HostStatus,
        error: Option<String>,
        protection_gap_ms: Option<u64>,
    },
    /// A host that will not be started (a halt or an interruption).
    HostNotStarted {
        client: String,
        host: String,
        reason: String,
    },
    ClientFinished {
        client: String,
        status: ClientStatus,
    },
    /// The first Ctrl-C: no new hosts or steps start.
    Interrupting,
    RunFinished {
        status: RunStatus,
        finished_at: String,
    },
}

/// The name a status or other unit enum has in reports and the journal
/// (its serde name: `rollback_failed`, `timed_out`, ...).
pub fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Something that watches a run. Called in order, on the runner's task:
/// keep it quick (write a line, update a bar, insert a row).
pub trait Observer: Send {
    /// `at` is when the event was emitted: the one time every observer
    /// records for it.
    fn on_event(&mut self, at: DateTime<Utc>, event: &Event);
}

/// A time as reports, the log and the journal write it: RFC 3339, UTC,
/// milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Delivers events to every observer.
#[derive(Default)]
pub struct Events {
    observers: Mutex<Vec<Box<dyn Observer>>>,
}

impl Events {
    pub fn new(observers: Vec<Box<dyn Observer>>) -> Events {
        Events {
            observers: Mutex::new(observers),
        }
    }

    /// Stamps `event` with the time now and delivers it.
    pub fn emit(&self, event: Event) {
        self.deliver(None, event);
    }

    /// Delivers `event` stamped `at`: for an event that carries its own
    /// time (`started_at`, `finished_at`), so that both are the same.
    pub fn emit_at(&self, at: DateTime<Utc>, event: Event) {
        self.deliver(Some(at), event);
    }

    fn deliver(&self, at: Option<DateTime<Utc>>, event: Event) {
        let mut observers = self.observers.lock().unwrap_or_else(|p| p.into_inner());
        // Stamped under the lock: times rise in the order observers see.
        let at = at.unwrap_or_else(Utc::now);
        for observer in observers.iter_mut() {
            observer.on_event(at, &event);
        }
    }

    /// Takes the observers back (to read what they gathered).
    pub fn into_observers(self) -> Vec<Box<dyn Observer>> {
        self.observers
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// An observer that keeps every event; for tests and the report builder.
#[derive(Default, Clone)]
pub struct Recorder {
    pub events: std::sync::Arc<Mutex<Vec<Event>>>,
}

impl Observer for Recorder {
    fn on_event(&mut self, _at: DateTime<Utc>, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}
