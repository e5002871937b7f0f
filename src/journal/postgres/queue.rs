//! The work queue of `run --queue` and `worker`: one row per client of a
//! queued run in `work`, leased by one worker at a time.
//!
//! A plain table rather than a job-queue crate: a client's rollout is one
//! job that lasts hours, waits on pauses and on people (`approve`), and
//! must be taken over by another worker with resume semantics if its
//! worker dies. What that needs is a lease with an expiry that a heartbeat
//! renews, `SELECT ... FOR UPDATE SKIP LOCKED` so that workers never wait
//! on each other, and the journal itself as the checkpoint (its events say
//! which steps completed); a queue crate's job states and retries would be
//! a second, coarser record beside it.
//!
//! A row is `queued` (nobody has it), `running` (a worker holds it while it
//! renews `expires_at`) or `done`. A running row whose lease expired, or
//! whose worker is a dead pid on this very machine, is taken over.
//! Approvals of `pause_between_waves: confirm` are rows in `approvals`:
//! the worker asks (`asked_at`), `orchestrate approve` answers.

use super::bridge::{Bridge, DbError};
use crate::journal::lease::{Holder, now_secs};

/// A client of a queued run, as a worker took it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub run_id: String,
    pub client: String,
    /// Who had it before, if its lease was taken over.
    pub previous: Option<String>,
}

/// One client of a run to enqueue.
pub struct Item<'a> {
    pub client: &'a str,
    pub site: Option<&'a str>,
}

/// What `approve` found.
pub enum Approval {
    Approved { wave: i64 },
    NotAsked,
}

pub struct Queue {
    bridge: Bridge,
}

impl Queue {
    /// The queue of the journal at `target`, on a connection of its own.
    pub fn open(target: &super::Target) -> Result<Queue, String> {
        Ok(Queue {
            bridge: super::connect(target, 1)?,
        })
    }

    /// Puts every client of run `run_id` in the queue, in plan order.
    pub fn enqueue(&self, run_id: &str, items: &[Item<'_>]) -> Result<(), String> {
        let run_id = run_id.to_string();
        let rows: Vec<(String, Option<String>)> = items
            .iter()
            .map(|i| (i.client.to_string(), i.site.map(str::to_string)))
            .collect();
        self.bridge.call(move |pool| {
            let (run_id, rows) = (run_id.clone(), rows.clone());
            async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                for (position, (name, site)) in rows.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO work (run_id, client, position, site) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (run_id, client) DO NOTHING",
                        &[&run_id, name, &(position as i32), site],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        })
    }

    /// Takes the first client a worker of `site` may run, if any, for
    /// `holder` until `expires_after` seconds from now.
    pub fn take(
        &self,
        holder: &Holder,
        site: Option<&str>,
        expires_after: f64,
    ) -> Result<Option<Taken>, String> {
        let (holder, site) = (holder.clone(), site.map(str::to_string));
        self.bridge.call(move |pool| {
            let (holder, site) = (holder.clone(), site.clone());
            async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                // Rows another worker is deciding on right now are skipped,
                // not waited for.
                let rows = tx
                    .query(
                        "SELECT run_id, client, state, worker, pid, machine, expires_at FROM work
                         WHERE state <> 'done' AND site IS NOT DISTINCT FROM $1
                         ORDER BY run_id, position
                         FOR UPDATE SKIP LOCKED",
                        &[&site],
                    )
                    .await?;
                let now = now_secs();
                let free = rows.iter().find(|r| {
                    let state: &str = r.get(2);
                    let expires_at: Option<f64> = r.get(6);
                    let gone = Holder {
                        token: String::new(),
                        run_id: String::new(),
                        command: String::new(),
                        pid: r.get::<_, Option<i64>>(4).unwrap_or(0) as u32,
                        machine: r.get::<_, Option<String>>(5).unwrap_or_default(),
                        since: String::new(),
                    };
                    state == "queued" || expires_at.is_none_or(|e| e < now) || gone.is_dead_here()
                });
                let Some(row) = free else {
                    return Ok(None);
                };
                let taken = Taken {
                    run_id: row.get(0),
                    client: row.get(1),
                    previous: (row.get::<_, &str>(2) == "running")
                        .then(|| row.get::<_, Option<String>>(3).unwrap_or_default()),
                };
                tx.execute(
                    "UPDATE work SET state = 'running', token = $3, worker = $4, pid = $5,
                        machine = $6, expires_at = $7, takes = takes + 1
                     WHERE run_id = $1 AND client = $2",
                    &[
                        &taken.run_id,
                        &taken.client,
                        &holder.token,
                        &format!(
                            "orchestrate worker (pid {} on {}, since {})",
                            holder.pid, holder.machine, holder.since
                        ),
                        &i64::from(holder.pid),
                        &holder.machine,
                        &(now + expires_after),
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(Some(taken))
            }
        })
    }

    /// Pushes the expiry of `holder`'s rows on; how many it still holds.
    pub fn renew(&self, holder: &Holder, expires_after: f64) -> Result<u64, String> {
        let token = holder.token.clone();
        self.bridge.call(move |pool| {
            let token = token.clone();
            async move {
                let client = pool.get().await?;
                Ok(client
                    .execute(
                        "UPDATE work SET expires_at = $2 WHERE token = $1 AND state = 'running'",
                        &[&token, &(now_secs() + expires_after)],
                    )
                    .await?)
            }
        })
    }

    /// Gives the client back, unfinished (this worker was stopped): another
    /// worker goes on with it.
    pub fn release(&self, taken: &Taken, holder: &Holder) -> Result<(), String> {
        let (run_id, client, token) = (
            taken.run_id.clone(),
            taken.client.clone(),
            holder.token.clone(),
        );
        self.bridge.call(move |pool| {
            let (run_id, client, token) = (run_id.clone(), client.clone(), token.clone());
            async move {
                let db = pool.get().await?;
                db.execute(
                    "UPDATE work SET state = 'queued', token = NULL, expires_at = NULL
                     WHERE run_id = $1 AND client = $2 AND token = $3",
                    &[&run_id, &client, &token],
                )
                .await?;
                Ok(())
            }
        })
    }

    /// Marks the client done with `status`; true if it was the run's last.
    pub fn finish(&self, taken: &Taken, holder: &Holder, status: &str) -> Result<bool, String> {
        let (run_id, client, token, status) = (
            taken.run_id.clone(),
            taken.client.clone(),
            holder.token.clone(),
            status.to_string(),
        );
        self.bridge.call(move |pool| {
            let (run_id, client, token, status) = (
                run_id.clone(),
                client.clone(),
                token.clone(),
                status.clone(),
            );
            async move {
                let mut db = pool.get().await?;
                let tx = db.transaction().await?;
                // Every row of the run locked: of two workers finishing
                // its last two clients at once, exactly one sees it done.
                let rows = tx
                    .query(
                        "SELECT client, state FROM work WHERE run_id = $1 FOR UPDATE",
                        &[&run_id],
                    )
                    .await?;
                tx.execute(
                    "UPDATE work SET state = 'done', status = $4, expires_at = NULL
                     WHERE run_id = $1 AND client = $2 AND token = $3",
                    &[&run_id, &client, &token, &status],
                )
                .await?;
                let last = rows
                    .iter()
                    .all(|r| r.get::<_, &str>(1) == "done" || r.get::<_, &str>(0) == client);
                tx.commit().await?;
                Ok(last)
            }
        })
    }

    /// Is any client this worker could take still unfinished?
    pub fn any_left(&self, site: Option<&str>) -> Result<bool, String> {
        let site = site.map(str::to_string);
        self.bridge.call(move |pool| {
            let site = site.clone();
            async move {
                let db = pool.get().await?;
                let row = db
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM work WHERE state <> 'done' AND site IS NOT DISTINCT FROM $1)",
                        &[&site],
                    )
                    .await?;
                Ok(row.get(0))
            }
        })
    }

    /// Records that `client` of `run_id` waits for wave `wave` to be
    /// approved; true once it is.
    pub fn ask(&self, run_id: &str, client: &str, wave: i64) -> Result<bool, String> {
        let (run_id, client) = (run_id.to_string(), client.to_string());
        self.bridge.call(move |pool| {
            let (run_id, client) = (run_id.clone(), client.clone());
            async move {
                let db = pool.get().await?;
                db.execute(
                    "INSERT INTO approvals (run_id, client, wave, asked_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (run_id, client, wave) DO NOTHING",
                    &[&run_id, &client, &wave, &crate::run::now()],
                )
                .await?;
                let row = db
                    .query_one(
                        "SELECT approved_at IS NOT NULL FROM approvals WHERE run_id = $1 AND client = $2 AND wave = $3",
                        &[&run_id, &client, &wave],
                    )
                    .await?;
                Ok(row.get(0))
            }
        })
    }

    /// `orchestrate approve`: answers the wave `client` of `run_id` waits for.
    pub fn approve(&self, run_id: &str, client: &str, by: &str) -> Result<Approval, String> {
        let (run_id, client, by) = (run_id.to_string(), client.to_string(), by.to_string());
        self.bridge.call(move |pool| {
            let (run_id, client, by) = (run_id.clone(), client.clone(), by.clone());
            async move {
                let db = pool.get().await?;
                let row = db
                    .query_opt(
                        "UPDATE approvals SET approved_at = $3, approved_by = $4
                         WHERE run_id = $1 AND client = $2 AND approved_at IS NULL
                         RETURNING wave",
                        &[&run_id, &client, &crate::run::now(), &by],
                    )
                    .await?;
                Ok::<_, DbError>(match row {
                    Some(row) => Approval::Approved { wave: row.get(0) },
                    None => Approval::NotAsked,
                })
            }
        })
    }
}
