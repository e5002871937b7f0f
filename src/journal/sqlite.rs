//! The SQLite journal: one file beside the inventory, the embedded default.
//!
//! Each event is committed (WAL mode) before the runner goes on, so a
//! process killed with SIGKILL at any moment leaves a file that says
//! exactly which steps had finished. `busy_timeout` lets `status` read
//! while a run writes.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::facts::{Fact, fact_of, kind_of};
use super::lease::{LeaseError, LeaseStore, SqliteLeases};
use super::{Backend, RecordedFile, RunRow};
use crate::run::Event;

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
CREATE TABLE IF NOT EXISTS run_files (
    run_id TEXT NOT NULL,
    path   TEXT NOT NULL,
    what   TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);
"#;

pub(super) struct SqliteJournal {
    conn: Connection,
    path: PathBuf,
    /// The next `seq` of each run this process appends to (one writer per
    /// run at a time: the run's lease).
    next_seq: std::collections::HashMap<String, i64>,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl SqliteJournal {
    pub(super) fn open(path: &Path) -> Result<SqliteJournal, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::owner_only::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        // Created 0600 before SQLite opens it: the journal holds endpoint
        // output, and its -wal and -shm files take this file's mode.
        crate::owner_only::touch(path).map_err(text)?;
        let conn = Connection::open(path).map_err(text)?;
        // WAL + NORMAL: every commit survives the process being killed.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        )
        .map_err(text)?;
        conn.execute_batch(SCHEMA).map_err(text)?;
        Ok(SqliteJournal {
            conn,
            path: path.to_path_buf(),
            next_seq: Default::default(),
        })
    }

    fn record(
        &mut self,
        run_id: &str,
        seq: i64,
        time: &str,
        event: &Event,
    ) -> rusqlite::Result<()> {
        let data = serde_json::to_string(event).unwrap_or_default();
        let tx = self.conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO events (run_id, seq, time, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![run_id, seq, time, kind_of(event, &data), data])?;
        match fact_of(event) {
            Some(Fact::Host {
                client,
                host,
                wave,
                status,
                error,
                protection_gap_ms,
            }) => {
                tx.prepare_cached(
                    "INSERT INTO hosts (run_id, client, host, wave, status, error, protection_gap_ms, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (run_id, host) DO UPDATE SET
                        wave = COALESCE(excluded.wave, hosts.wave), status = excluded.status,
                        error = excluded.error, protection_gap_ms = excluded.protection_gap_ms,
                        updated_at = excluded.updated_at",
                )?
                .execute(params![run_id, client, host, wave, status, error, protection_gap_ms, time])?;
            }
            Some(Fact::Step {
                host,
                index,
                phase,
                name,
                status,
                exit_code,
                attempts,
                duration_ms,
                detail,
                stdout,
                stderr,
            }) => {
                tx.prepare_cached(
                    "INSERT INTO steps (run_id, host, idx, phase, name, status, exit_code, attempts, duration_ms, detail, stdout, stderr, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![run_id, host, index, phase, name, status, exit_code, attempts, duration_ms, detail, stdout, stderr, time])?;
            }
            Some(Fact::Rollback {
                host,
                name,
                status,
                exit_code,
                detail,
            }) => {
                tx.prepare_cached(
                    "INSERT INTO rollbacks (run_id, host, name, status, exit_code, detail, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![run_id, host, name, status, exit_code, detail, time])?;
            }
            Some(Fact::Reopened) => {
                tx.prepare_cached(
                    "UPDATE runs SET finished_at = NULL, status = NULL WHERE run_id = ?1",
                )?
                .execute([run_id])?;
            }
            Some(Fact::Finished {
                finished_at,
                status,
            }) => {
                tx.prepare_cached(
                    "UPDATE runs SET finished_at = ?2, status = ?3 WHERE run_id = ?1",
                )?
                .execute(params![run_id, finished_at, status])?;
            }
            None => {}
        }
        tx.commit()
    }
}

const RUN_COLUMNS: &str = "run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at, finished_at, status";

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

impl Backend for SqliteJournal {
    fn start_run(&mut self, row: &RunRow) -> Result<(), String> {
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
            .map_err(text)
    }

    fn runs(&mut self) -> Result<Vec<RunRow>, String> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC"
            ))
            .map_err(text)?;
        let rows = statement
            .query_map([], run_row)
            .map_err(text)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(text)?;
        Ok(rows)
    }

    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, String> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_row,
            )
            .optional()
            .map_err(text)
    }

    fn events(&mut self, run_id: &str) -> Result<Vec<(String, String)>, String> {
        let mut statement = self
            .conn
            .prepare("SELECT time, data FROM events WHERE run_id = ?1 ORDER BY seq")
            .map_err(text)?;
        let rows = statement
            .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(text)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(text)?;
        Ok(rows)
    }

    fn append(&mut self, run_id: &str, time: &str, event: &Event) -> Result<(), String> {
        let seq = match self.next_seq.get(run_id) {
            Some(seq) => *seq,
            None => self
                .conn
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                    [run_id],
                    |r| r.get(0),
                )
                .map_err(text)?,
        };
        self.record(run_id, seq, time, event).map_err(text)?;
        self.next_seq.insert(run_id.to_string(), seq + 1);
        Ok(())
    }

    fn record_files(&mut self, run_id: &str, files: &[RecordedFile]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(text)?;
        for f in files {
            tx.execute(
                "INSERT OR REPLACE INTO run_files (run_id, path, what, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, f.path.display().to_string(), f.what, f.sha256],
            )
            .map_err(text)?;
        }
        tx.commit().map_err(text)
    }

    fn files(&mut self, run_id: &str) -> Result<Vec<RecordedFile>, String> {
        let mut statement = self
            .conn
            .prepare("SELECT path, what, sha256 FROM run_files WHERE run_id = ?1 ORDER BY rowid")
            .map_err(text)?;
        let rows = statement
            .query_map([run_id], |r| {
                Ok(RecordedFile {
                    path: PathBuf::from(r.get::<_, String>(0)?),
                    what: r.get(1)?,
                    sha256: r.get(2)?,
                })
            })
            .map_err(text)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(text)?;
        Ok(rows)
    }

    fn leases(&self) -> Result<Box<dyn LeaseStore>, LeaseError> {
        Ok(Box::new(SqliteLeases::open(&self.path)?))
    }
}
