//! The journal: a SQLite file that says where every run, client and host
//! stands, written as the run goes.
//!
//! A fleet migration takes days and many runs, and a crash, a closed laptop
//! or a Ctrl-C must never lose track of an endpoint that was half migrated.
//! So the journal is an [`Observer`] of the runner's events, written
//! synchronously: each event is committed (WAL mode) before the runner goes
//! on, and a process killed with SIGKILL at any moment leaves a journal
//! that says exactly which steps had finished.
//!
//! Every event is kept as JSON in `events`, the source of truth that
//! `resume`, `status` and `report` replay. `runs`, `hosts`, `steps` and
//! `rollbacks` are the same facts as tables, for people who query their
//! journal with `sqlite3`. Nothing secret is written: events are redacted
//! before they are emitted.

mod files;
pub mod lease;
mod replay;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

pub use files::{RecordedFile, changes};
pub use replay::{Replay, replay};

use crate::run::{Event, Observer, name_of};

/// The journal's default place: `.orchestrate/state.db` beside the inventory.
pub fn default_path(inventory: &Path) -> PathBuf {
    inventory
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(".orchestrate")
        .join("state.db")
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    run_id           TEXT PRIMARY KEY,
    playbook         TEXT NOT NULL,
    inventory        TEXT NOT NULL,
    playbook_sha256  TEXT NOT NULL,
    inventory_sha256 TEXT NOT NULL,
    options          TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT,
    status           TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    time   TEXT NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS hosts (
    run_id            TEXT NOT NULL,
    client            TEXT NOT NULL,
    host              TEXT NOT NULL,
    wave              INTEGER,
    status            TEXT NOT NULL,
    error             TEXT,
    protection_gap_ms INTEGER,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (run_id, host)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id      TEXT NOT NULL,
    host        TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    phase       TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    attempts    INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    detail      TEXT,
    stdout      TEXT,
    stderr      TEXT,
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollbacks (
    run_id      TEXT NOT NULL,
    host        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    detail      TEXT,
    finished_at TEXT NOT NULL
);
"#;

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
    pub path: String,
    pub message: String,
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let fail = |message: String| JournalError {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::owner_only::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Created 0600 before SQLite opens it: the journal holds endpoint
        // output, and its -wal and -shm files take this file's mode.
        crate::owner_only::touch(path).map_err(|e| fail(e.to_string()))?;
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        // WAL + NORMAL: every commit survives the process being killed;
        // busy_timeout lets `status` read while a run writes.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        )
        .map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(files::SCHEMA)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing journal, with advice if there is none.
    pub fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        if !path.exists() {
            return Err(JournalError {
                path: path.display().to_string(),
                message: "no journal here; runs keep theirs in .orchestrate/state.db beside the inventory: pass that with --state".into(),
            });
        }
        Journal::open(path)
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> JournalError {
        JournalError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    pub fn start_run(&self, row: &RunRow) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO runs (run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.run_id,
                    row.playbook,
                    row.inventory,
                    row.playbook_sha256,
                    row.inventory_sha256,
                    row.options.to_string(),
                    row.started_at
                ],
            )
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, JournalError> {
        let mut statement = self
            .conn
            .prepare("SELECT run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at, finished_at, status FROM runs ORDER BY started_at DESC, rowid DESC")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], run_row)
            .map_err(|e| self.error(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))?;
        Ok(rows)
    }

    pub fn run(&self, run_id: &str) -> Result<RunRow, JournalError> {
        self.conn
            .query_row(
                "SELECT run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at, finished_at, status FROM runs WHERE run_id = ?1",
                [run_id],
                run_row,
            )
            .optional()
            .map_err(|e| self.error(e))?
            .ok_or_else(|| self.error(format!("no run {run_id}; `orchestrate status` lists the runs")))
    }

    /// Every event of a run in order, with its time.
    pub fn events(&self, run_id: &str) -> Result<Vec<(String, Event)>, JournalError> {
        let mut statement = self
            .conn
            .prepare("SELECT time, data FROM events WHERE run_id = ?1 ORDER BY seq")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([run_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.error(e))?;
        let mut events = Vec::new();
        for row in rows {
            let (time, data) = row.map_err(|e| self.error(e))?;
            let event: Event = serde_json::from_str(&data).map_err(|e| {
                self.error(format!(
                    "an event cannot be read ({e}); was it written by a newer orchestrate?"
                ))
            })?;
            events.push((time, event));
        }
        Ok(events)
    }

    fn next_seq(&self, run_id: &str) -> Result<i64, JournalError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .map_err(|e| self.error(e))
    }

    /// An observer that appends the events of run `run_id` to this journal.
    /// If writing fails, `stop` is cancelled: no new host or step starts,
    /// since nothing more could be resumed.
    pub fn writer(
        self,
        run_id: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<JournalWriter, JournalError> {
        let seq = self.next_seq(run_id)?;
        Ok(JournalWriter {
            journal: self,
            run_id: run_id.to_string(),
            seq,
            failed: false,
            stop,
        })
    }

    fn record(
        &mut self,
        run_id: &str,
        seq: i64,
        time: &str,
        event: &Event,
    ) -> Result<(), rusqlite::Error> {
        let data = serde_json::to_string(event).unwrap_or_default();
        let kind = serde_json::to_value(event)
            .ok()
            .and_then(|v| v.get("event").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_default();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO events (run_id, seq, time, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, seq, time, kind, data],
        )?;
        match event {
            Event::HostStarted { client, host, wave } => {
                upsert_host(
                    &tx,
                    run_id,
                    client,
                    host,
                    Some(*wave),
                    "running",
                    None,
                    None,
                    time,
                )?;
            }
            Event::HostFinished {
                client,
                host,
                status,
                error,
                protection_gap_ms,
            } => {
                upsert_host(
                    &tx,
                    run_id,
                    client,
                    host,
                    None,
                    status.as_str(),
                    error.as_deref(),
                    *protection_gap_ms,
                    time,
                )?;
            }
            Event::HostNotStarted {
                client,
                host,
                reason,
            } => {
                upsert_host(
                    &tx,
                    run_id,
                    client,
                    host,
                    None,
                    "not_started",
                    Some(reason),
                    None,
                    time,
                )?;
            }
            // A host whose reboot waits (`reboot: window | ask`) says so in
            // `hosts`, with why, until the reboot starts.
            Event::RebootWaiting {
                client,
                host,
                reason,
                ..
            } => {
                upsert_host(
                    &tx,
                    run_id,
                    client,
                    host,
                    None,
                    "waiting_for_reboot",
                    Some(reason),
                    None,
                    time,
                )?;
            }
            Event::Rebooting { client, host } => {
                upsert_host(&tx, run_id, client, host, None, "running", None, None, time)?;
            }
            Event::StepFinished { host, step, .. } => {
                tx.execute(
                    "INSERT INTO steps (run_id, host, idx, phase, name, status, exit_code, attempts, duration_ms, detail, stdout, stderr, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        run_id,
                        host,
                        step.index as i64,
                        step.phase,
                        step.name,
                        name_of(&step.status),
                        step.exit_code,
                        step.attempts,
                        step.duration_ms as i64,
                        step.detail,
                        step.stdout,
                        step.stderr,
                        time
                    ],
                )?;
            }
            Event::RollbackStepFinished { host, step, .. } => {
                tx.execute(
                    "INSERT INTO rollbacks (run_id, host, name, status, exit_code, detail, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![run_id, host, step.name, name_of(&step.status), step.exit_code, step.detail, time],
                )?;
            }
            Event::RunResumed { .. } => {
                tx.execute(
                    "UPDATE runs SET finished_at = NULL, status = NULL WHERE run_id = ?1",
                    [run_id],
                )?;
            }
            Event::RunFinished {
                status,
                finished_at,
            } => {
                tx.execute(
                    "UPDATE runs SET finished_at = ?2, status = ?3 WHERE run_id = ?1",
                    params![run_id, finished_at, name_of(status)],
                )?;
            }
            _ => {}
        }
        tx.commit()
    }
}

#[allow(clippy::too_many_arguments)]
fn upsert_host(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    client: &str,
    host: &str,
    wave: Option<usize>,
    status: &str,
    error: Option<&str>,
    gap: Option<u64>,
    time: &str,
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO hosts (run_id, client, host, wave, status, error, protection_gap_ms, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (run_id, host) DO UPDATE SET
            wave = COALESCE(excluded.wave, hosts.wave), status = excluded.status,
            error = excluded.error, protection_gap_ms = excluded.protection_gap_ms,
            updated_at = excluded.updated_at",
        params![run_id, client, host, wave.map(|w| w as i64), status, error, gap.map(|g| g as i64), time],
    )
    .map(|_| ())
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        playbook: r.get(1)?,
        inventory: r.get(2)?,
        playbook_sha256: r.get(3)?,
        inventory_sha256: r.get(4)?,
        options: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        status: r.get(8)?,
    })
}

/// Appends a run's events to the journal as they happen.
pub struct JournalWriter {
    journal: Journal,
    run_id: String,
    seq: i64,
    failed: bool,
    stop: tokio_util::sync::CancellationToken,
}

impl Observer for JournalWriter {
    fn on_event(&mut self, at: chrono::DateTime<chrono::Utc>, event: &Event) {
        let time = crate::run::timestamp(at);
        match self.journal.record(&self.run_id, self.seq, &time, event) {
            Ok(()) => self.seq += 1,
            Err(e) => {
                if !self.failed {
                    // Said once, loudly: without a journal, resume cannot
                    // know where hosts stand.
                    tracing::error!(
                        "cannot write the journal {}: {e}; stopping as after Ctrl-C (running steps finish, half-done hosts are rolled back), since nothing more could be resumed",
                        self.journal.path.display()
                    );
                    self.failed = true;
                    self.stop.cancel();
                }
            }
        }
    }
}

/// SHA-256 of a file's contents, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}
