//! The PostgreSQL connection pool on a thread of its own, called from
//! anywhere, synchronously.
//!
//! The journal is an observer that must have committed an event before the
//! runner goes on, and it is called on the runner's own tokio threads
//! (where blocking on another runtime would panic) as well as from plain
//! threads (the lease heartbeat) and before any runtime exists (`status`).
//! So the async driver (tokio-postgres, pooled by deadpool-postgres) lives
//! on one thread with a current-thread runtime, and each call is a job sent
//! to it, whose caller waits for the answer: the same blocking commit the
//! SQLite journal does, on a well-kept async driver.
//!
//! A connection lost mid-run is retried: a call whose error is about the
//! connection (refused, reset, closed, the server shutting down) or a
//! serialization failure runs again on a fresh connection, after
//! 100 ms, 200 ms, ... up to [`RETRY_FOR`] in all. An error the server
//! reports about the SQL itself is not retried.

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::target::Target;

/// How long a call keeps retrying a lost connection before it fails.
pub const RETRY_FOR: Duration = Duration::from_secs(15);

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &Pool) + Send>;

/// A handle on the pool's thread; the thread ends when the last handle goes.
pub struct Bridge {
    jobs: mpsc::Sender<Job>,
    target: Target,
}

#[derive(Debug)]
pub enum DbError {
    Pg(tokio_postgres::Error),
    Pool(PoolError),
    /// The pool's thread is gone (it could not start).
    Gone(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> DbError {
        DbError::Pg(e)
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> DbError {
        DbError::Pool(e)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn pg(e: &tokio_postgres::Error, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
                None => {
                    write!(f, "{e}")?;
                    if let Some(source) = std::error::Error::source(e) {
                        write!(f, ": {source}")?;
                    }
                    Ok(())
                }
            }
        }
        match self {
            DbError::Pg(e) => pg(e, f),
            DbError::Pool(PoolError::Backend(e)) => pg(e, f),
            DbError::Pool(PoolError::Timeout(_)) => f.write_str("timed out connecting"),
            DbError::Pool(e) => write!(f, "{e}"),
            DbError::Gone(why) => f.write_str(why),
        }
    }
}

impl DbError {
    /// About the connection (worth a fresh one), not about the SQL.
    fn is_transient(&self) -> bool {
        let pg = |e: &tokio_postgres::Error| match e.code() {
            None => e.as_db_error().is_none(),
            Some(code) => {
                *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || code.code().starts_with("08")
            }
        };
        match self {
            DbError::Pg(e) | DbError::Pool(PoolError::Backend(e)) => pg(e),
            DbError::Pool(PoolError::Timeout(_)) => true,
            DbError::Pool(_) | DbError::Gone(_) => false,
        }
    }
}

impl Bridge {
    /// Starts the pool's thread (`size` connections at most). Connects
    /// lazily: the first call says whether the server can be reached.
    pub fn start(target: &Target, size: usize) -> Result<Bridge, String> {
        let config = target.config.clone();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                let manager = Manager::from_config(
                    config,
                    NoTls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                let pool = match Pool::builder(manager)
                    .max_size(size)
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .create_timeout(Some(Duration::from_secs(10)))
                    .wait_timeout(Some(Duration::from_secs(30)))
                    .build()
                {
                    Ok(pool) => pool,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot make its pool: {e}")));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                while let Ok(job) = queue.recv() {
                    job(&runtime, &pool);
                }
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        started
            .recv()
            .map_err(|_| "its thread ended".to_string())??;
        Ok(Bridge {
            jobs,
            target: target.clone(),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs `work` on the pool and waits for it; retried while the
    /// connection is what fails. The error is redacted.
    pub fn call<R, F, Fut>(&self, work: F) -> Result<R, String>
    where
        R: Send + 'static,
        F: Fn(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, DbError>>,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |runtime, pool| {
            let result = runtime.block_on(async {
                let started = Instant::now();
                let mut delay = Duration::from_millis(100);
                loop {
                    match work(pool.clone()).await {
                        Err(e) if e.is_transient() && started.elapsed() + delay < RETRY_FOR => {
                            tracing::debug!("journal: {e}; retrying in {delay:?}");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                        other => break other,
                    }
                }
            });
            let _ = answer.send(result);
        });
        let result = match self.jobs.send(job) {
            Ok(()) => answered
                .recv()
                .unwrap_or_else(|_| Err(DbError::Gone("its thread ended".into()))),
            Err(_) => Err(DbError::Gone("its thread ended".into())),
        };
        result.map_err(|e| self.target.redact(&e.to_string()))
    }
}
