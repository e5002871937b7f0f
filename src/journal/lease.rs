//! One process at a time per run and per host: leases in the journal.
//!
//! Two `resume`s of one run, or two `run`s on one state file, would both
//! work on the same endpoints (an uninstall racing an install). So before a
//! run touches any host it takes a lease on the run and on every host it
//! may touch, all in one transaction: if a live process holds any of them,
//! nothing is taken and the run is refused, naming that process.
//!
//! A lease is live while its holder renews it: a heartbeat thread does so
//! every [`RENEW_EVERY`], and a lease not renewed for [`EXPIRES_AFTER`] is
//! stale (its process is gone, wherever it ran: the journal may sit on a
//! shared disk). On this machine a dead pid is proof enough, without
//! waiting: a run killed with SIGKILL leaves leases that the next run takes
//! over at once, with a warning.
//!
//! The store is behind [`LeaseStore`], a handful of operations any database
//! with transactions can do; SQLite's is [`SqliteLeases`], PostgreSQL's is
//! [`crate::journal::postgres::leases::PgLeases`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// How often a holder renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A lease not renewed for this long is stale.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(30);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS leases (
    resource   TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    command    TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    machine    TEXT NOT NULL,
    since      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"#;

/// What a lease is on: a run, or a host (by its inventory name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Run(String),
    Host(String),
}

impl Resource {
    pub(crate) fn key(&self) -> String {
        match self {
            Resource::Run(id) => format!("run:{id}"),
            Resource::Host(name) => format!("host:{name}"),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Run(id) => write!(f, "run {id}"),
            Resource::Host(name) => write!(f, "host {name}"),
        }
    }
}

/// The process holding (or asking for) leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Unique to this process's lease, so a reused pid is never mistaken for it.
    pub token: String,
    pub run_id: String,
    /// `run` or `resume`.
    pub command: String,
    pub pid: u32,
    pub machine: String,
    /// When it took its leases (RFC 3339).
    pub since: String,
}

impl Holder {
    /// This process, about to work on `run_id` with `command`.
    pub fn this_process(run_id: &str, command: &str) -> Holder {
        Holder {
            token: uuid::Uuid::new_v4().simple().to_string(),
            run_id: run_id.to_string(),
            command: command.to_string(),
            pid: std::process::id(),
            machine: machine_name(),
            since: crate::run::now(),
        }
    }

    /// Gone for sure: on this machine with a pid that no longer runs.
    pub(crate) fn is_dead_here(&self) -> bool {
        self.machine == machine_name() && !pid_alive(self.pid)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "orchestrate {} of run {} (pid {} on {}, since {})",
            self.command, self.run_id, self.pid, self.machine, self.since
        )
    }
}

/// Leases another process holds and is still renewing: nothing was taken.
#[derive(Debug)]
pub struct Busy {
    pub held: Vec<(Resource, Holder)>,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((first, holder)) = self.held.first() else {
            return f.write_str("nothing is held");
        };
        write!(f, "{first} is being worked on by {holder}")?;
        let others = self.held.len() - 1;
        if others > 0 {
            let names: Vec<String> = self.held[1..]
                .iter()
                .take(5)
                .map(|(r, _)| r.to_string())
                .collect();
            let more = if others > 5 { ", ..." } else { "" };
            write!(f, ", and {others} more ({}{more})", names.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Busy(Busy),
    #[error("journal {path}: leases: {message}")]
    Store { path: String, message: String },
}

/// Stale leases that were taken over, with who had held them.
pub type TakenOver = Vec<(Resource, Holder)>;

/// Where leases live. Each call is one transaction.
pub trait LeaseStore: Send {
    /// Takes every lease in `resources` for `holder`, or none if a live
    /// holder has any of them. Stale leases are taken over and returned.
    fn acquire(&mut self, holder: &Holder, resources: &[Resource])
    -> Result<TakenOver, LeaseError>;
    /// Pushes the expiry of `holder`'s leases on; returns how many it still holds.
    fn renew(&mut self, holder: &Holder) -> Result<usize, LeaseError>;
    /// Gives up all of `holder`'s leases.
    fn release(&mut self, holder: &Holder) -> Result<(), LeaseError>;
}

/// Leases in the journal's SQLite file, on a connection of their own (the
/// heartbeat renews them from its thread while the run writes events).
pub struct SqliteLeases {
    conn: Connection,
    path: PathBuf,
}

impl SqliteLeases {
    pub fn open(path: &Path) -> Result<SqliteLeases, LeaseError> {
        let fail = |e: rusqlite::Error| store_error(path, e);
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch("PRAGMA busy_timeout=10000;")
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(SqliteLeases {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn fail(&self, e: rusqlite::Error) -> LeaseError {
        store_error(&self.path, e)
    }
}

fn store_error(path: &Path, e: rusqlite::Error) -> LeaseError {
    LeaseError::Store {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl LeaseStore for SqliteLeases {
    fn acquire(
        &mut self,
        holder: &Holder,
        resources: &[Resource],
    ) -> Result<TakenOver, LeaseError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| store_error(&path, e);
        // IMMEDIATE: two processes asking at once are serialized here.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let now = now_secs();
        let mut busy = Vec::new();
        let mut stale = Vec::new();
        for resource in resources {
            let row = tx
                .query_row(
                    "SELECT token, run_id, command, pid, machine, since, expires_at
                     FROM leases WHERE resource = ?1",
                    [resource.key()],
                    |r| {
                        Ok((
                            Holder {
                                token: r.get(0)?,
                                run_id: r.get(1)?,
                                command: r.get(2)?,
                                pid: r.get(3)?,
                                machine: r.get(4)?,
                                since: r.get(5)?,
                            },
                            r.get::<_, f64>(6)?,
                        ))
                    },
                )
                .optional()
                .map_err(fail)?;
            match row {
                None => {}
                Some((other, _)) if other.token == holder.token => {}
                Some((other, expires_at)) if expires_at < now || other.is_dead_here() => {
                    stale.push((resource.clone(), other))
                }
                Some((other, _)) => busy.push((resource.clone(), other)),
            }
        }
        if !busy.is_empty() {
            return Err(LeaseError::Busy(Busy { held: busy }));
        }
        let expires_at = now + EXPIRES_AFTER.as_secs_f64();
        for resource in resources {
            tx.execute(
                "INSERT OR REPLACE INTO leases
                 (resource, token, run_id, command, pid, machine, since, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    resource.key(),
                    holder.token,
                    holder.run_id,
                    holder.command,
                    holder.pid,
                    holder.machine,
                    holder.since,
                    expires_at
                ],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(stale)
    }

    fn renew(&mut self, holder: &Holder) -> Result<usize, LeaseError> {
        let expires_at = now_secs() + EXPIRES_AFTER.as_secs_f64();
        self.conn
            .execute(
                "UPDATE leases SET expires_at = ?2 WHERE token = ?1",
                params![holder.token, expires_at],
            )
            .map_err(|e| self.fail(e))
    }

    fn release(&mut self, holder: &Holder) -> Result<(), LeaseError> {
        self.conn
            .execute("DELETE FROM leases WHERE token = ?1", [&holder.token])
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }
}

/// Leases held by this process, renewed by a heartbeat thread until dropped.
pub struct LeaseGuard {
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl LeaseGuard {
    /// Takes the leases and starts renewing them. `lost` runs (once) if
    /// renewing finds them gone or cannot reach the store: the run should
    /// then stop taking on hosts, as another process may be taking them.
    pub fn take(
        mut store: Box<dyn LeaseStore>,
        holder: Holder,
        resources: &[Resource],
        lost: impl FnOnce(String) + Send + 'static,
    ) -> Result<(LeaseGuard, TakenOver), LeaseError> {
        let taken_over = store.acquire(&holder, resources)?;
        let expected = resources.len();
        let (stop, stopped) = mpsc::channel::<()>();
        let heartbeat = std::thread::Builder::new()
            .name("lease-heartbeat".into())
            .spawn(move || {
                let mut lost = Some(lost);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(RENEW_EVERY) {
                    let why = match store.renew(&holder) {
                        Ok(held) if held == expected => continue,
                        Ok(held) => format!(
                            "{} of this run's {expected} leases were taken over by another process",
                            expected - held
                        ),
                        Err(e) => format!("cannot renew this run's leases: {e}"),
                    };
                    if let Some(lost) = lost.take() {
                        lost(why);
                    }
                }
                if let Err(e) = store.release(&holder) {
                    tracing::warn!("{e}; the next run will take the leases over once they expire");
                }
            })
            .map_err(|e| LeaseError::Store {
                path: String::new(),
                message: format!("cannot start the lease heartbeat: {e}"),
            })?;
        Ok((
            LeaseGuard {
                stop: Some(stop),
                heartbeat: Some(heartbeat),
            },
            taken_over,
        ))
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
    }
}

/// This machine's host name, as leases name it.
pub fn machine_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Does process `pid` exist on this machine? (A zombie counts as alive.)
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str, pid: u32, machine: &str) -> Holder {
        Holder {
            token: format!("{run}-{pid}"),
            run_id: run.into(),
            command: "run".into(),
            pid,
            machine: machine.into(),
            since: "2026-12-01T23:00:00Z".into(),
        }
    }

    fn hosts(names: &[&str]) -> Vec<Resource> {
        names
            .iter()
            .map(|n| Resource::Host(n.to_string()))
            .collect()
    }

    #[test]
    fn a_live_holder_keeps_its_hosts_and_nothing_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut store = SqliteLeases::open(&path).unwrap();
        let me = holder("a", std::process::id(), &machine_name());
        assert!(
            store
                .acquire(&me, &hosts(&["h1", "h2"]))
                .unwrap()
                .is_empty()
        );
        let other = holder("b", std::process::id(), &machine_name());
        let Err(LeaseError::Busy(busy)) = store.acquire(&other, &hosts(&["h3", "h2"])) else {
            panic!("the second holder got the lease");
        };
        assert_eq!(busy.held.len(), 1);
        let text = busy.to_string();
        assert!(
            text.contains("host h2 is being worked on by orchestrate run of run a"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // All or nothing: h3 was not taken either.
        let third = holder("c", std::process::id(), &machine_name());
        assert!(store.acquire(&third, &hosts(&["h3"])).unwrap().is_empty());
        store.release(&me).unwrap();
        assert!(store.acquire(&other, &hosts(&["h2"])).unwrap().is_empty());
    }

    #[test]
    fn a_dead_pid_here_or_an_expired_lease_elsewhere_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteLeases::open(&dir.path().join("state.db")).unwrap();
        let dead = holder("a", i32::MAX as u32, &machine_name());
        store.acquire(&dead, &hosts(&["h1"])).unwrap();
        let me = holder("b", std::process::id(), &machine_name());
        let taken = store.acquire(&me, &hosts(&["h1"])).unwrap();
        assert_eq!(taken, vec![(Resource::Host("h1".into()), dead)]);

        let elsewhere = holder("c", 1, "another-machine");
        store.acquire(&elsewhere, &hosts(&["h9"])).unwrap();
        let err = store.acquire(&me, &hosts(&["h9"])).unwrap_err();
        assert!(err.to_string().contains("on another-machine"), "{err}");
        store
            .conn
            .execute(
                "UPDATE leases SET expires_at = 0 WHERE resource = 'host:h9'",
                [],
            )
            .unwrap();
        assert_eq!(store.acquire(&me, &hosts(&["h9"])).unwrap().len(), 1);
        assert_eq!(store.renew(&me).unwrap(), 2);
    }
}
