//! The PostgreSQL journal: the same events, tables and queries as the
//! SQLite one, in a database that several controllers share.
//!
//! An MSP's run of many clients lasts weeks, with several technicians and
//! machines at clients' sites; one laptop holding the only journal is a
//! single point of failure. With `--state postgres://...` every process
//! (`run`, `worker`, `status`, `report`, `resume`) reads and writes one
//! journal from any machine.
//!
//! The guarantees are the SQLite journal's: each event is committed (one
//! transaction with its table rows) before the runner goes on, and a
//! journal that cannot be written stops the run. What differs is shaped by
//! several writers: an event's `seq` comes from a sequence (two workers on
//! one run never collide), and each event carries an id of its own, so an
//! insert retried after a lost connection that had in fact committed is
//! not recorded twice. The statements of an event's commit are prepared
//! once per connection (deadpool's statement cache): a commit is then
//! `BEGIN`, its statements and `COMMIT`, a round trip each.

mod bridge;
pub mod leases;
pub mod queue;
mod schema;
pub mod target;

use std::path::PathBuf;

pub use bridge::{Bridge, DbError};
pub use target::{Target, is_postgres};

use super::facts::{Fact, fact_of, kind_of};
use super::lease::{LeaseError, LeaseStore};
use super::{Backend, RecordedFile, RunRow};
use crate::run::Event;

pub(super) struct PgJournal {
    bridge: Bridge,
}

/// Opens a bridge to `target` and brings its schema up to date.
pub fn connect(target: &Target, size: usize) -> Result<Bridge, String> {
    let bridge = Bridge::start(target, size)?;
    bridge.call(schema::migrate)??;
    Ok(bridge)
}

impl PgJournal {
    pub(super) fn open(target: &Target) -> Result<PgJournal, String> {
        Ok(PgJournal {
            bridge: connect(target, 2)?,
        })
    }
}

const RUN_COLUMNS: &str = "run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at, finished_at, status";

fn run_row(r: &tokio_postgres::Row) -> RunRow {
    RunRow {
        run_id: r.get(0),
        playbook: r.get(1),
        inventory: r.get(2),
        playbook_sha256: r.get(3),
        inventory_sha256: r.get(4),
        options: serde_json::from_str(r.get::<_, &str>(5)).unwrap_or_default(),
        started_at: r.get(6),
        finished_at: r.get(7),
        status: r.get(8),
    }
}

async fn record(
    pool: deadpool_postgres::Pool,
    run_id: String,
    event_id: String,
    time: String,
    event: Event,
) -> Result<(), DbError> {
    let data = serde_json::to_string(&event).unwrap_or_default();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let inserted = tx.execute(
            &tx.prepare_cached("INSERT INTO events (run_id, event_id, time, kind, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (event_id) DO NOTHING").await?,
            &[&run_id, &event_id, &time, &kind_of(&event, &data), &data],
        )
        .await?;
    if inserted == 0 {
        // Committed by an attempt whose answer the lost connection ate.
        return Ok(());
    }
    match fact_of(&event) {
        Some(Fact::Host {
            client,
            host,
            wave,
            status,
            error,
            protection_gap_ms,
        }) => {
            tx.execute(
                &tx.prepare_cached("INSERT INTO hosts (run_id, client, host, wave, status, error, protection_gap_ms, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (run_id, host) DO UPDATE SET
                    wave = COALESCE(excluded.wave, hosts.wave), status = excluded.status,
                    error = excluded.error, protection_gap_ms = excluded.protection_gap_ms,
                    updated_at = excluded.updated_at").await?,
                &[&run_id, &client, &host, &wave, &status, &error, &protection_gap_ms, &time],
            )
            .await?;
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
            tx.execute(
                &tx.prepare_cached("INSERT INTO steps (run_id, host, idx, phase, name, status, exit_code, attempts, duration_ms, detail, stdout, stderr, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)").await?,
                &[&run_id, &host, &index, &phase, &name, &status, &exit_code, &attempts, &duration_ms, &detail, &stdout, &stderr, &time],
            )
            .await?;
        }
        Some(Fact::Rollback {
            host,
            name,
            status,
            exit_code,
            detail,
        }) => {
            tx.execute(
                &tx.prepare_cached("INSERT INTO rollbacks (run_id, host, name, status, exit_code, detail, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)").await?,
                &[&run_id, &host, &name, &status, &exit_code, &detail, &time],
            )
            .await?;
        }
        Some(Fact::Reopened) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE runs SET finished_at = NULL, status = NULL WHERE run_id = $1",
                )
                .await?,
                &[&run_id],
            )
            .await?;
        }
        Some(Fact::Finished {
            finished_at,
            status,
        }) => {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE runs SET finished_at = $2, status = $3 WHERE run_id = $1",
                )
                .await?,
                &[&run_id, &finished_at, &status],
            )
            .await?;
        }
        None => {}
    }
    tx.commit().await?;
    Ok(())
}

impl Backend for PgJournal {
    fn start_run(&mut self, row: &RunRow) -> Result<(), String> {
        let row = row.clone();
        self.bridge.call(move |pool| {
            let row = row.clone();
            async move {
                let client = pool.get().await?;
                client
                    .execute(
                        "INSERT INTO runs (run_id, playbook, inventory, playbook_sha256, inventory_sha256, options, started_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id) DO NOTHING",
                        &[
                            &row.run_id,
                            &row.playbook,
                            &row.inventory,
                            &row.playbook_sha256,
                            &row.inventory_sha256,
                            &row.options.to_string(),
                            &row.started_at,
                        ],
                    )
                    .await?;
                Ok(())
            }
        })
    }

    fn runs(&mut self) -> Result<Vec<RunRow>, String> {
        self.bridge.call(|pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, position DESC"
                    ),
                    &[],
                )
                .await?;
            Ok(rows.iter().map(run_row).collect())
        })
    }

    fn run(&mut self, run_id: &str) -> Result<Option<RunRow>, String> {
        let run_id = run_id.to_string();
        self.bridge.call(move |pool| {
            let run_id = run_id.clone();
            async move {
                let client = pool.get().await?;
                let row = client
                    .query_opt(
                        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"),
                        &[&run_id],
                    )
                    .await?;
                Ok(row.as_ref().map(run_row))
            }
        })
    }

    fn events(&mut self, run_id: &str) -> Result<Vec<(String, String)>, String> {
        let run_id = run_id.to_string();
        self.bridge.call(move |pool| {
            let run_id = run_id.clone();
            async move {
                let client = pool.get().await?;
                let rows = client
                    .query(
                        "SELECT time, data FROM events WHERE run_id = $1 ORDER BY seq",
                        &[&run_id],
                    )
                    .await?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            }
        })
    }

    fn append(&mut self, run_id: &str, time: &str, event: &Event) -> Result<(), String> {
        let (run_id, time, event) = (run_id.to_string(), time.to_string(), event.clone());
        let event_id = uuid::Uuid::new_v4().simple().to_string();
        self.bridge.call(move |pool| {
            record(
                pool,
                run_id.clone(),
                event_id.clone(),
                time.clone(),
                event.clone(),
            )
        })
    }

    fn record_files(&mut self, run_id: &str, files: &[RecordedFile]) -> Result<(), String> {
        let run_id = run_id.to_string();
        let files: Vec<(String, String, String)> = files
            .iter()
            .map(|f| {
                (
                    f.path.display().to_string(),
                    f.what.clone(),
                    f.sha256.clone(),
                )
            })
            .collect();
        self.bridge.call(move |pool| {
            let (run_id, files) = (run_id.clone(), files.clone());
            async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                for (path, what, sha256) in &files {
                    tx.execute(
                        "INSERT INTO run_files (run_id, path, what, sha256) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (run_id, path) DO UPDATE SET what = excluded.what, sha256 = excluded.sha256",
                        &[&run_id, path, what, sha256],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        })
    }

    fn files(&mut self, run_id: &str) -> Result<Vec<RecordedFile>, String> {
        let run_id = run_id.to_string();
        self.bridge.call(move |pool| {
            let run_id = run_id.clone();
            async move {
                let client = pool.get().await?;
                let rows = client
                    .query(
                        "SELECT path, what, sha256 FROM run_files WHERE run_id = $1 ORDER BY position",
                        &[&run_id],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| RecordedFile {
                        path: PathBuf::from(r.get::<_, String>(0)),
                        what: r.get(1),
                        sha256: r.get(2),
                    })
                    .collect())
            }
        })
    }

    fn leases(&self) -> Result<Box<dyn LeaseStore>, LeaseError> {
        Ok(Box::new(leases::PgLeases::open(self.bridge.target())?))
    }
}
