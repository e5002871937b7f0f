//! `orchestrate worker`: takes clients of queued runs from the shared
//! journal, one at a time, and runs each exactly as `run` would (waves,
//! budgets, pauses; confirmations answered by `orchestrate approve`),
//! journaling every event.
//!
//! A client is taken with a lease on its row of the queue
//! ([`crate::journal::postgres::queue`]) that a heartbeat renews, and its
//! hosts with the same per-host leases `run` and `resume` take. Its waves
//! always start from the journal, with resume semantics: a client that a
//! dead worker left mid-way goes on after the steps journaled as completed.
//! The worker journals its client's events only: the run's own start is
//! journaled when it is queued, and its end by the worker that finishes
//! its last client.
//!
//! SIGINT, SIGTERM and SIGHUP act as Ctrl-C does for `run`: the client in
//! hand stops the soft way and goes back to the queue for another worker,
//! and this one takes no more work; a second signal stops at once.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;

use super::EXIT_INVALID;
use super::args::WorkerArgs;
use super::execute::{block_on, connectors, init_tracing, replan, still_to_touch, take_leases_on};
use super::operator::Signals;
use super::output;
use super::queue::queue_at;
use crate::journal::lease::{EXPIRES_AFTER, Holder, RENEW_EVERY, Resource};
use crate::journal::postgres::queue::{Queue, Taken};
use crate::journal::{self, Journal, Location};
use crate::report::lines::Lines;
use crate::report::run_json::{Report, ReportBuilder};
use crate::report::terminal::inert;
use crate::run::{
    self, ClientStatus, Confirm, Event, Events, HostStatus, Interrupt, Observer, RunOptions,
    RunStatus,
};

/// How often an idle worker looks for work.
const POLL_EVERY: Duration = Duration::from_millis(500);

pub fn worker(args: &WorkerArgs) -> i32 {
    let policy = args.host_key_policy.into();
    super::warn_if_unchecked(policy);
    let location = match Location::parse(&args.state) {
        Ok(location) => location,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let queue = match queue_at(&location) {
        Ok(queue) => Arc::new(queue),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    block_on(work(args, location, queue))
}

async fn work(args: &WorkerArgs, location: Location, queue: Arc<Queue>) -> i32 {
    init_tracing(false, args.verbose);
    let interrupt = Interrupt::default();
    match Signals::install() {
        Ok(signals) => signals.watch(interrupt.clone(), Arc::new(Events::default())),
        Err(e) => {
            eprintln!("error: cannot watch for signals: {e}");
            return EXIT_INVALID;
        }
    }
    let site = args.site.as_deref();
    let holder = Holder::this_process("", "worker");
    output::println(&format!(
        "worker pid {} on {}{}: journal {location}",
        holder.pid,
        holder.machine,
        site.map(|s| format!(", site {}", inert(s)))
            .unwrap_or_default()
    ));
    let mut said_waiting = false;
    loop {
        if interrupt.soft.is_cancelled() {
            return 130;
        }
        let taken = match queue.take(&holder, site, EXPIRES_AFTER.as_secs_f64()) {
            Ok(taken) => taken,
            Err(e) => {
                eprintln!("error: journal {location}: {e}");
                return 1;
            }
        };
        let Some(taken) = taken else {
            if args.exit_when_idle {
                match queue.any_left(site) {
                    Ok(false) => {
                        output::println("worker: no work left");
                        return 0;
                    }
                    Ok(true) => {}
                    Err(e) => {
                        eprintln!("error: journal {location}: {e}");
                        return 1;
                    }
                }
            }
            if !said_waiting {
                output::println("worker: waiting for work");
                said_waiting = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = interrupt.soft.cancelled() => {}
            }
            continue;
        };
        said_waiting = false;
        let client = inert(&taken.client);
        match &taken.previous {
            Some(previous) => output::println(&format!(
                "worker: took client {client} of run {} over from {previous}, which is gone (its lease lapsed, or its process died)",
                taken.run_id
            )),
            None => output::println(&format!(
                "worker: took client {client} of run {}",
                taken.run_id
            )),
        }
        let ended = run_client(args, &location, &queue, &holder, &taken, &interrupt).await;
        let status = match ended {
            Ended::Interrupted => {
                if let Err(e) = queue.release(&taken, &holder) {
                    eprintln!("error: journal {location}: {e}");
                }
                output::println(&format!(
                    "worker: stopped; client {client} of run {} goes back to the queue",
                    taken.run_id
                ));
                return 130;
            }
            Ended::Lost => {
                output::println(&format!(
                    "worker: lost client {client} of run {} to another worker",
                    taken.run_id
                ));
                continue;
            }
            Ended::Refused => "refused".to_string(),
            Ended::Finished(status) => run::name_of(&status),
        };
        output::println(&format!(
            "worker: client {client} of run {}: {status}",
            taken.run_id
        ));
        match queue.finish(&taken, &holder, &status) {
            Ok(true) => finish_run(&location, &taken.run_id),
            Ok(false) => {}
            Err(e) => eprintln!("error: journal {location}: {e}"),
        }
    }
}

/// How a worker's turn with a client ended.
enum Ended {
    Finished(ClientStatus),
    /// Its plan could not be made (changed files, bad input): said why.
    Refused,
    /// Stopped by a signal: the client goes back to the queue.
    Interrupted,
    /// Its lease was taken by another worker: that one goes on.
    Lost,
}

async fn run_client(
    args: &WorkerArgs,
    location: &Location,
    queue: &Arc<Queue>,
    holder: &Holder,
    taken: &Taken,
    interrupt: &Interrupt,
) -> Ended {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        Ended::Refused
    };
    let journal = match Journal::open(location) {
        Ok(journal) => journal,
        Err(e) => return fail(&e),
    };
    let row = match journal.run(&taken.run_id) {
        Ok(row) => row,
        Err(e) => return fail(&e),
    };
    let Ok((plan, replay)) = replan(
        &journal,
        &row,
        false,
        Some(&taken.client),
        args.host_key_policy.into(),
    ) else {
        return Ended::Refused;
    };
    let hosts: Vec<Resource> = still_to_touch(&plan, &replay.hosts)
        .into_iter()
        .map(Resource::Host)
        .collect();
    let Ok(leases) = take_leases_on(&journal, &taken.run_id, "worker", &hosts) else {
        return Ended::Refused;
    };
    let heartbeat = Heartbeat::start(Arc::clone(queue), holder.clone());
    let options = |key: &str| row.options.get(key).and_then(|v| v.as_bool()) == Some(true);
    let earlier = replay
        .report
        .hosts()
        .map(|h| (h.name.clone(), h.status))
        .collect();
    let report = ReportBuilder {
        report: Arc::new(std::sync::Mutex::new(replay.report)),
    };
    // This run of one client stops the soft way on a signal (the worker's
    // own), on losing the journal, or on losing its leases.
    let stop = Interrupt::default();
    let writer = match journal.writer(&taken.run_id, stop.soft.clone()) {
        Ok(writer) => writer.keeping(|e| {
            !matches!(
                e,
                Event::RunStarted { .. } | Event::RunResumed { .. } | Event::RunFinished { .. }
            )
        }),
        Err(e) => return fail(&e),
    };
    let observers: Vec<Box<dyn Observer>> = vec![
        Box::new(writer),
        Box::new(report.clone()),
        Box::new(Lines::new(output::Stdout, args.verbose > 0)),
    ];
    let events = Arc::new(Events::new(observers));
    let done = tokio_util::sync::CancellationToken::new();
    {
        let (outer, stop, events) = (interrupt.clone(), stop.clone(), Arc::clone(&events));
        let (lost, lapsed, done) = (leases.lost.clone(), heartbeat.lost.clone(), done.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.soft.cancelled() => {}
                _ = lost.cancelled() => {}
                _ = lapsed.cancelled() => {}
                _ = stop.soft.cancelled() => {}
                _ = done.cancelled() => return,
            }
            stop.soft.cancel();
            events.emit(Event::Interrupting);
            tokio::select! {
                _ = outer.hard.cancelled() => stop.hard.cancel(),
                _ = done.cancelled() => {}
            }
        });
    }
    let confirm: Arc<dyn Confirm> = Arc::new(Approvals {
        queue: Arc::clone(queue),
        run_id: taken.run_id.clone(),
        yes: options("yes"),
    });
    let run_options = RunOptions {
        run_id: taken.run_id.clone(),
        forks: args.forks as usize,
        check: options("check"),
        rehearsal: false,
        confirm,
        resume: Some(replay.hosts),
        earlier,
        clock: super::execute::clock_from_env(),
    };
    run::execute(
        Arc::new(plan),
        connectors(),
        run_options,
        Arc::clone(&events),
        stop.clone(),
    )
    .await;
    done.cancel();
    let lapsed = heartbeat.lost.is_cancelled();
    drop(heartbeat);
    drop(leases);
    if interrupt.soft.is_cancelled() {
        return Ended::Interrupted;
    }
    if lapsed {
        return Ended::Lost;
    }
    let report = report.snapshot();
    let status = report
        .clients
        .iter()
        .find(|c| c.name == taken.client)
        .and_then(|c| c.status)
        .unwrap_or(ClientStatus::Interrupted);
    Ended::Finished(status)
}

/// The last client of a run is done: the run's end, from every client's.
fn finish_run(location: &Location, run_id: &str) {
    let finish = || -> Result<RunStatus, journal::JournalError> {
        let journal = Journal::open(location)?;
        let report = journal::replay(&journal.events(run_id)?).report;
        let status = status_of(&report);
        let now = chrono::Utc::now();
        journal.append(
            run_id,
            &run::timestamp(now),
            &Event::RunFinished {
                status,
                finished_at: run::timestamp(now),
            },
        )?;
        Ok(status)
    };
    match finish() {
        Ok(status) => output::println(&format!(
            "worker: run {run_id} finished: {}",
            run::name_of(&status)
        )),
        Err(e) => eprintln!("error: {e}"),
    }
}

fn status_of(report: &Report) -> RunStatus {
    if report
        .hosts()
        .any(|h| h.status == HostStatus::RollbackFailed)
    {
        return RunStatus::RollbackFailed;
    }
    let clients: Vec<(String, ClientStatus)> = report
        .clients
        .iter()
        .map(|c| (c.name.clone(), c.status.unwrap_or(ClientStatus::Failed)))
        .collect();
    run::run_status(&clients)
}

/// Renews the lease on a worker's row of the queue until dropped; `lost`
/// is cancelled if another worker took the row (this one was presumed dead).
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: tokio_util::sync::CancellationToken,
}

impl Heartbeat {
    fn start(queue: Arc<Queue>, holder: Holder) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let lost = tokio_util::sync::CancellationToken::new();
        let thread = {
            let lost = lost.clone();
            std::thread::Builder::new()
                .name("work-heartbeat".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(RENEW_EVERY)
                    {
                        match queue.renew(&holder, EXPIRES_AFTER.as_secs_f64()) {
                            Ok(0) => {
                                tracing::error!(
                                    "another worker took this client over; stopping as after Ctrl-C"
                                );
                                lost.cancel();
                                return;
                            }
                            Ok(_) => {}
                            // Retried already; the lease may still hold.
                            Err(e) => tracing::warn!("cannot renew this worker's lease: {e}"),
                        }
                    }
                })
                .ok()
        };
        Heartbeat {
            stop: Some(stop),
            thread,
            lost,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `pause_between_waves: confirm` in a queued run: asked in the journal,
/// answered by `orchestrate approve RUN CLIENT` from anywhere (or by
/// `--yes` given when the run was queued).
struct Approvals {
    queue: Arc<Queue>,
    run_id: String,
    yes: bool,
}

#[async_trait]
impl Confirm for Approvals {
    async fn confirm(&self, client: &str, next_wave: usize, so_far: &str) -> Result<(), String> {
        if self.yes {
            return Ok(());
        }
        let mut said = false;
        loop {
            match self.queue.ask(&self.run_id, client, next_wave as i64) {
                Ok(true) => return Ok(()),
                Ok(false) if !said => {
                    output::println(&format!(
                        "{}: wave {next_wave} waits for `orchestrate approve {} {}` ({so_far})",
                        inert(client),
                        self.run_id,
                        inert(client)
                    ));
                    said = true;
                }
                Ok(false) => {}
                Err(e) => return Err(format!("cannot ask for wave {next_wave}'s approval: {e}")),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Nobody is at a worker's terminal: only `--yes` (given when the run
    /// was queued) answers.
    async fn confirm_reboot(&self, _client: &str, _host: &str, _why: &str) -> Result<(), String> {
        if self.yes {
            Ok(())
        } else {
            Err("the reboot needs the operator's confirmation (reboot: ask) and a queued run has no terminal to ask; the host was not rebooted (queue the run with --yes, or give the host reboot: window)".into())
        }
    }
}
