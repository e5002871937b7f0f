//! The journal: where every run, client and host stands, written as the
//! run goes, in a SQLite file (the embedded default) or in PostgreSQL
//! (shared by several controllers and workers).
//!
//! A fleet migration takes days and many runs, and a crash, a closed laptop
//! or a Ctrl-C must never lose track of an endpoint that was half migrated.
//! So the journal is an [`Observer`] of the runner's events, written
//! synchronously: each event is committed before the runner goes on, and a
//! process killed with SIGKILL at any moment leaves a journal that says
//! exactly which steps had finished.
//!
//! Every event is kept as JSON in `events`, the source of truth that
//! `resume`, `status` and `report` replay. `runs`, `hosts`, `steps` and
//! `rollbacks` are the same facts as tables, for people who query their
//! journal with `sqlite3` or `psql` ([`facts`] says which, once for both).
//! Nothing secret is written: events are redacted before they are emitted.
//!
//! [`Journal`] is the one interface; [`Backend`] is what each store does
//! ([`sqlite`], [`postgres`]), a handful of statements in its own SQL.

mod facts;
mod files;
pub mod lease;
pub mod postgres;
mod replay;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use files::{RecordedFile, changes};
pub use replay::{Replay, replay};

use crate::run::{Event, Observer};
use lease::{LeaseError, LeaseStore};

/// The journal's default place: `.orchestrate/state.db` beside the inventory.
pub fn default_path(inventory: &Path) -> PathBuf {
    inventory
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(".orchestrate")
        .join("state.db")
}

/// Where a journal is: `--state FILE` or `--state postgres://...` (or
/// `ORCHESTRATE_STATE`). Shown (in every message) without its password.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    Postgres(Box<postgres::Target>),
}

impl Location {
    /// `--state` as given, or `default` (a file) without one.
    pub fn of(
        state: Option<&Path>,
        default: impl FnOnce() -> PathBuf,
    ) -> Result<Location, JournalError> {
        match state {
            Some(state) => Location::parse(state),
            None => Ok(Location::File(default())),
        }
    }

    pub fn parse(state: &Path) -> Result<Location, JournalError> {
        match state.to_str() {
            Some(text) if postgres::is_postgres(text) => postgres::Target::parse(text)
                .map(|target| Location::Postgres(Box::new(target)))
                .map_err(|message| JournalError {
                    path: postgres::target::redact_url(text),
                    message,
                }),
            _ => Ok(Location::File(state.to_path_buf())),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(target) => write!(f, "{target}"),
        }
    }
}

/// What a journal store does; each call is one transaction (or one read).
/// Errors are plain text, already free of any password.
pub(crate) trait Backend: Send {
    fn start_run(&mut self, row: &RunRow) -> Result<(), String>;
    /// Runs, newest first.
    fn runs(&mut self) -> Result<Vec<RunRow>, String>;
    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, String>;
    /// A run's events in order: (time, JSON).
    fn events(&mut self, run_id: &str) -> Result<Vec<(String, String)>, String>;
    /// Commits `event` with the rows it changes ([`facts`]).
    fn append(&mut self, run_id: &str, time: &str, event: &Event) -> Result<(), String>;
    fn record_files(&mut self, run_id: &str, files: &[RecordedFile]) -> Result<(), String>;
    fn files(&mut self, run_id: &str) -> Result<Vec<RecordedFile>, String>;
    /// A lease store on its own connection (the heartbeat's).
    fn leases(&self) -> Result<Box<dyn LeaseStore>, LeaseError>;
}

/// A run as the `runs` table holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub playbook: String,
    pub inventory: String,
    #[serde(skip)]
    pub playbook_sha256: String,
    #[serde(skip)]
    pub inventory_sha256: String,
    #[serde(skip)]
    pub options: serde_json::Value,
    pub status: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {message}")]
pub struct JournalError {
    /// The journal's name as shown: a file, or a connection string
    /// without its password.
    pub path: String,
    pub message: String,
}

pub struct Journal {
    backend: Mutex<Box<dyn Backend>>,
    location: Location,
}

impl Journal {
    /// Opens (creating if needed) the journal at `location`; a PostgreSQL
    /// journal is connected to, and its schema brought up to date.
    pub fn open(location: &Location) -> Result<Journal, JournalError> {
        let fail = |message: String| JournalError {
            path: location.to_string(),
            message,
        };
        let backend: Box<dyn Backend> = match location {
            Location::File(path) => Box::new(sqlite::SqliteJournal::open(path).map_err(fail)?),
            Location::Postgres(target) => {
                Box::new(postgres::PgJournal::open(target).map_err(fail)?)
            }
        };
        Ok(Journal {
            backend: Mutex::new(backend),
            location: location.clone(),
        })
    }

    /// Opens an existing journal, with advice if there is no such file.
    pub fn open_existing(location: &Location) -> Result<Journal, JournalError> {
        if let Location::File(path) = location
            && !path.exists()
        {
            return Err(JournalError {
                path: path.display().to_string(),
                message: "no journal here; runs keep theirs in .orchestrate/state.db beside the inventory: pass that with --state".into(),
            });
        }
        Journal::open(location)
    }

    /// Where this journal is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn error(&self, message: impl std::fmt::Display) -> JournalError {
        JournalError {
            path: self.location.to_string(),
            message: message.to_string(),
        }
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, String>,
    ) -> Result<R, JournalError> {
        let mut backend = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        f(backend.as_mut()).map_err(|e| self.error(e))
    }

    pub fn start_run(&self, row: &RunRow) -> Result<(), JournalError> {
        self.with(|b| b.start_run(row))
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, JournalError> {
        self.with(|b| b.runs())
    }

    pub fn run(&self, run_id: &str) -> Result<RunRow, JournalError> {
        self.with(|b| b.run(run_id))?.ok_or_else(|| {
            self.error(format!(
                "no run {run_id}; `orchestrate status` lists the runs"
            ))
        })
    }

    /// Every event of a run in order, with its time.
    pub fn events(&self, run_id: &str) -> Result<Vec<(String, Event)>, JournalError> {
        let rows = self.with(|b| b.events(run_id))?;
        rows.into_iter()
            .map(|(time, data)| {
                let event: Event = serde_json::from_str(&data).map_err(|e| {
                    self.error(format!(
                        "an event cannot be read ({e}); was it written by a newer orchestrate?"
                    ))
                })?;
                Ok((time, event))
            })
            .collect()
    }

    /// Commits one event of run `run_id`.
    pub fn append(&self, run_id: &str, time: &str, event: &Event) -> Result<(), JournalError> {
        self.with(|b| b.append(run_id, time, event))
    }

    /// A lease store on this journal, on a connection of its own.
    pub fn leases(&self) -> Result<Box<dyn LeaseStore>, LeaseError> {
        self.backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leases()
    }

    /// An observer that appends the events of run `run_id` to this journal.
    /// If writing fails, `stop` is cancelled: no new host or step starts,
    /// since nothing more could be resumed.
    pub fn writer(
        self,
        run_id: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<JournalWriter, JournalError> {
        Ok(JournalWriter {
            journal: self,
            run_id: run_id.to_string(),
            failed: false,
            stop,
            keep: |_| true,
        })
    }
}

/// Appends a run's events to the journal as they happen.
pub struct JournalWriter {
    journal: Journal,
    run_id: String,
    failed: bool,
    stop: tokio_util::sync::CancellationToken,
    /// Which events are journaled (a worker leaves the run's own start and
    /// end to the queue: it runs one client of many).
    keep: fn(&Event) -> bool,
}

impl JournalWriter {
    /// Journals only the events `keep` accepts.
    pub fn keeping(mut self, keep: fn(&Event) -> bool) -> JournalWriter {
        self.keep = keep;
        self
    }
}

impl Observer for JournalWriter {
    fn on_event(&mut self, at: chrono::DateTime<chrono::Utc>, event: &Event) {
        if !(self.keep)(event) {
            return;
        }
        let time = crate::run::timestamp(at);
        if let Err(e) = self.journal.append(&self.run_id, &time, event)
            && !self.failed
        {
            // Said once, loudly: without a journal, resume cannot know
            // where hosts stand.
            tracing::error!(
                "cannot write the {e}; stopping as after Ctrl-C (running steps finish, half-done hosts are rolled back), since nothing more could be resumed"
            );
            self.failed = true;
            self.stop.cancel();
        }
    }
}

/// SHA-256 of a file's contents, hex. Read through a small buffer, not
/// whole: the files of a plan include its uploads, and a 200 MB installer
/// read at once would cost the run 200 MB of memory before it starts.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
