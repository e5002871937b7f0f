//! The per-run and per-host leases ([`LeaseStore`]) in PostgreSQL: the same
//! rules as in SQLite's file, for processes on any machine.
//!
//! Acquiring is one transaction under an advisory lock, so two processes
//! asking at once are serialized exactly as SQLite's `BEGIN IMMEDIATE`
//! serializes them; expiry is the holder's own clock, as there.

use super::bridge::{Bridge, DbError};
use super::target::Target;
use crate::journal::lease::{
    Busy, EXPIRES_AFTER, Holder, LeaseError, LeaseStore, Resource, TakenOver, now_secs,
};

/// The advisory lock every acquisition takes.
const LEASE_LOCK: i64 = 0x6c65_6173_6573;

pub struct PgLeases {
    bridge: Bridge,
}

fn store_error(target: &Target, message: String) -> LeaseError {
    LeaseError::Store {
        path: target.to_string(),
        message,
    }
}

impl PgLeases {
    /// On a connection of its own: the heartbeat renews from its thread
    /// while the run writes events.
    pub fn open(target: &Target) -> Result<PgLeases, LeaseError> {
        let bridge = Bridge::start(target, 1).map_err(|e| store_error(target, e))?;
        Ok(PgLeases { bridge })
    }

    fn fail(&self, message: String) -> LeaseError {
        store_error(self.bridge.target(), message)
    }
}

impl LeaseStore for PgLeases {
    fn acquire(
        &mut self,
        holder: &Holder,
        resources: &[Resource],
    ) -> Result<TakenOver, LeaseError> {
        let holder = holder.clone();
        let resources = resources.to_vec();
        let answer = self.bridge.call(move |pool| {
            let (holder, resources) = (holder.clone(), resources.clone());
            async move {
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LEASE_LOCK])
                    .await?;
                let now = now_secs();
                let mut busy = Vec::new();
                let mut stale = Vec::new();
                for resource in &resources {
                    let row = tx
                        .query_opt(
                            "SELECT token, run_id, command, pid, machine, since, expires_at
                             FROM leases WHERE resource = $1",
                            &[&resource.key()],
                        )
                        .await?;
                    let Some(row) = row else { continue };
                    let other = Holder {
                        token: row.get(0),
                        run_id: row.get(1),
                        command: row.get(2),
                        pid: row.get::<_, i64>(3) as u32,
                        machine: row.get(4),
                        since: row.get(5),
                    };
                    let expires_at: f64 = row.get(6);
                    if other.token == holder.token {
                    } else if expires_at < now || other.is_dead_here() {
                        stale.push((resource.clone(), other));
                    } else {
                        busy.push((resource.clone(), other));
                    }
                }
                if !busy.is_empty() {
                    return Ok(Err(Busy { held: busy }));
                }
                let expires_at = now + EXPIRES_AFTER.as_secs_f64();
                for resource in &resources {
                    tx.execute(
                        "INSERT INTO leases (resource, token, run_id, command, pid, machine, since, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (resource) DO UPDATE SET token = excluded.token,
                            run_id = excluded.run_id, command = excluded.command, pid = excluded.pid,
                            machine = excluded.machine, since = excluded.since, expires_at = excluded.expires_at",
                        &[
                            &resource.key(),
                            &holder.token,
                            &holder.run_id,
                            &holder.command,
                            &i64::from(holder.pid),
                            &holder.machine,
                            &holder.since,
                            &expires_at,
                        ],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok::<_, DbError>(Ok(stale))
            }
        });
        match answer {
            Ok(Ok(stale)) => Ok(stale),
            Ok(Err(busy)) => Err(LeaseError::Busy(busy)),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn renew(&mut self, holder: &Holder) -> Result<usize, LeaseError> {
        let token = holder.token.clone();
        self.bridge
            .call(move |pool| {
                let token = token.clone();
                async move {
                    let expires_at = now_secs() + EXPIRES_AFTER.as_secs_f64();
                    let client = pool.get().await?;
                    let n = client
                        .execute(
                            "UPDATE leases SET expires_at = $2 WHERE token = $1",
                            &[&token, &expires_at],
                        )
                        .await?;
                    Ok(n as usize)
                }
            })
            .map_err(|e| self.fail(e))
    }

    fn release(&mut self, holder: &Holder) -> Result<(), LeaseError> {
        let token = holder.token.clone();
        self.bridge
            .call(move |pool| {
                let token = token.clone();
                async move {
                    let client = pool.get().await?;
                    client
                        .execute("DELETE FROM leases WHERE token = $1", &[&token])
                        .await?;
                    Ok(())
                }
            })
            .map_err(|e| self.fail(e))
    }
}
