//! Rendering a template on a thread the caller can give up on.
//!
//! Tera 2 bounds `range()` (100 000 items) and nothing else, and calls
//! nothing of ours while a loop writes nothing: two loops nested over
//! `range(end=100000)` with an empty body run for hours, and the output
//! bound of [`super::templates`] never hears of it. Rust cannot stop a
//! running thread, so a template that can loop renders on a worker thread
//! while its caller waits no longer than a deadline; past it the caller
//! fails the template, and the worker is abandoned (left to end on its own,
//! or with the process) while a fresh one takes its place. On Linux the
//! abandoned thread is also set to the lowest CPU priority, so a runaway
//! template rendered at run time slows nothing else of the run.
//!
//! Workers are kept and reused: a plan renders each template once per host,
//! and starting a thread costs more than rendering most templates.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// Idle workers kept for the next render (more are started as needed; the
/// ones past this many end when their render is done).
const MAX_IDLE: usize = 16;

/// The stack of a worker: the main thread's usual 8 MiB, since a template
/// rendered there before may nest as deep here.
const STACK_BYTES: usize = 8 * 1024 * 1024;

/// Why a render on a worker gave no result.
#[derive(Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// Still running at the deadline (and left running).
    TimedOut,
    /// The worker could not be started, or the render panicked.
    Failed(String),
}

/// Worker threads, each waiting for one render at a time.
#[derive(Default)]
pub struct RenderWorkers {
    idle: Mutex<Vec<Worker>>,
}

/// A worker thread's job queue, and its thread id (0 until it has run).
struct Worker {
    jobs: mpsc::Sender<Job>,
    thread_id: Arc<AtomicI64>,
}

impl RenderWorkers {
    /// Runs `work` on a worker and waits for it at most `limit`.
    pub fn within<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unfinished> {
        let (done, result) = mpsc::sync_channel(1);
        let mut job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        let worker = loop {
            let worker = match self.take_idle() {
                Some(worker) => worker,
                None => start().map_err(Unfinished::Failed)?,
            };
            // An idle worker's thread cannot be gone (a panicked one is
            // never kept), but if it were, another takes the job.
            match worker.jobs.send(job) {
                Ok(()) => break worker,
                Err(mpsc::SendError(back)) => job = back,
            }
        };
        match result.recv_timeout(limit) {
            Ok(value) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(worker);
                }
                Ok(value)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                deprioritise(worker.thread_id.load(Ordering::Relaxed));
                Err(Unfinished::TimedOut)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Unfinished::Failed(
                "the template engine panicked while rendering it".into(),
            )),
        }
    }

    fn take_idle(&self) -> Option<Worker> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }
}

/// A worker thread: it renders what it is sent until its sender is dropped.
fn start() -> Result<Worker, String> {
    let (send, jobs) = mpsc::channel::<Job>();
    let thread_id = Arc::new(AtomicI64::new(0));
    let own_id = Arc::clone(&thread_id);
    std::thread::Builder::new()
        .name("template-render".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            own_id.store(current_thread_id(), Ordering::Relaxed);
            for job in jobs {
                job();
            }
        })
        .map_err(|e| format!("cannot start a thread to render templates on: {e}"))?;
    Ok(Worker {
        jobs: send,
        thread_id,
    })
}

#[cfg(target_os = "linux")]
fn current_thread_id() -> i64 {
    // SAFETY: gettid(2) takes nothing and cannot fail.
    i64::from(unsafe { libc::gettid() })
}

#[cfg(not(target_os = "linux"))]
fn current_thread_id() -> i64 {
    0
}

/// Linux keeps a nice value per thread (setpriority(2), `PRIO_PROCESS`
/// with a thread id): the abandoned worker gets the lowest priority.
#[cfg(target_os = "linux")]
fn deprioritise(thread_id: i64) {
    if let Ok(id) = libc::id_t::try_from(thread_id)
        && id > 0
    {
        // SAFETY: setpriority(2) reads only its arguments; a thread that
        // has ended meanwhile makes it fail with ESRCH, which is harmless.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, id, 19);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn deprioritise(_thread_id: i64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_past_the_deadline_is_given_up_on_and_the_next_render_still_runs() {
        let workers = RenderWorkers::default();
        assert_eq!(workers.within(Duration::from_secs(5), || 1 + 1), Ok(2));
        let started = std::time::Instant::now();
        let (tell, told) = mpsc::channel();
        let stuck = workers.within(Duration::from_millis(100), move || {
            let _ = tell.send(current_thread_id());
            std::thread::sleep(Duration::from_secs(3));
        });
        assert_eq!(stuck, Err(Unfinished::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Left running, at the lowest priority (field 19 of its stat: nice;
        // shows a change only when the tests themselves run at nice 0).
        #[cfg(target_os = "linux")]
        {
            let id = told.recv().unwrap();
            let stat = std::fs::read_to_string(format!("/proc/self/task/{id}/stat")).unwrap();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            assert_eq!(fields[16], "19", "{stat}");
        }
        let _ = told;
        // The stuck worker is not handed the next render.
        assert_eq!(
            workers.within(Duration::from_secs(1), || "next"),
            Ok("next")
        );
        let panicked = workers.within(Duration::from_secs(5), || -> u8 { panic!("boom") });
        assert!(
            matches!(panicked, Err(Unfinished::Failed(_))),
            "{panicked:?}"
        );
        assert_eq!(workers.within(Duration::from_secs(5), || 3), Ok(3));
    }
}
