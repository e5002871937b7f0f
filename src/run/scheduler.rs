//! The scheduler: clients side by side, each client's waves one after
//! another, the hosts of a wave in parallel, and the failure budget.
//!
//! What MSPs cannot get from Ansible's `serial` + `max_fail_percentage`:
//! the budget is counted per client over the whole run (not per batch),
//! exceeding it halts that client only (its hosts in flight finish, none of
//! its hosts starts again, other clients go on), and a budget of "100%"
//! never halts, even when every host of a wave fails.
//!
//! Parallelism has two bounds: a client's `concurrency` and `--forks` over
//! all clients. Hosts wait for their client's permit first, then for a
//! fork, both queues first-come first-served, so one large client cannot
//! starve the others of its own permits. The wave takes both permits for
//! its hosts one by one, in inventory order, before it hands each host to a
//! task of its own: tasks spawned together run in no particular order (the
//! runtime even runs the newest first), so a host that queued for its own
//! permits inside its task could overtake the hosts listed before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::events::{ClientStatus, Event, Events, HostStatus};
use super::host::{HostRun, run_host};
use crate::load::Pause;
use crate::plan::{ClientPlan, HostPlan, LiveRedactor, Plan};
use crate::transport::Connectors;

/// Asks whether to go on to the next wave (`pause_between_waves: confirm`).
#[async_trait]
pub trait Confirm: Send + Sync {
    /// `Ok(())` to go on; `Err(why)` halts the client with that reason.
    async fn confirm(&self, client: &str, next_wave: usize, so_far: &str) -> Result<(), String>;

    /// `reboot: ask`: `Ok(())` to reboot `host` now; `Err(why)` fails the
    /// step that asked for the reboot, with that reason.
    async fn confirm_reboot(&self, client: &str, host: &str, why: &str) -> Result<(), String>;
}

/// `--yes`: every confirmation is answered yes.
pub struct AlwaysYes;

#[async_trait]
impl Confirm for AlwaysYes {
    async fn confirm(&self, _: &str, _: usize, _: &str) -> Result<(), String> {
        Ok(())
    }

    async fn confirm_reboot(&self, _: &str, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// First and second Ctrl-C.
#[derive(Clone, Default)]
pub struct Interrupt {
    /// Start no new host or step; let running steps end; roll back hosts
    /// caught half-way.
    pub soft: CancellationToken,
    /// Stop at once.
    pub hard: CancellationToken,
}

pub struct Scheduler {
    pub plan: Arc<Plan>,
    pub connectors: Connectors,
    pub events: Arc<Events>,
    pub forks: Arc<Semaphore>,
    pub confirm: Arc<dyn Confirm>,
    pub interrupt: Interrupt,
    pub check: bool,
    pub clock: super::Clock,
    pub redactor: Arc<LiveRedactor>,
    /// Where each host picks up, when resuming.
    pub resume: Option<Arc<super::Resume>>,
    /// Each host's latest status (seeded, on resume, with where earlier
    /// processes left them): what the run's outcome is decided from.
    pub hosts: Mutex<std::collections::HashMap<String, HostStatus>>,
}

/// Where a client stands while its waves run.
struct ClientState {
    failed: AtomicUsize,
    halted: AtomicBool,
    /// Why the client halted, said once.
    reason: Mutex<Option<String>>,
}

impl Scheduler {
    /// Runs every client to its end; returns each client's status.
    pub async fn run(self: Arc<Self>) -> Vec<(String, ClientStatus)> {
        let mut clients = tokio::task::JoinSet::new();
        for index in 0..self.plan.clients.len() {
            let this = Arc::clone(&self);
            clients.spawn(async move {
                let client = &this.plan.clients[index];
                (client.name.clone(), this.run_client(client).await)
            });
        }
        let mut statuses = Vec::new();
        while let Some(done) = clients.join_next().await {
            if let Ok(status) = done {
                statuses.push(status);
            }
        }
        // Report in inventory order, whatever order clients ended in.
        statuses.sort_by_key(|(name, _)| self.plan.clients.iter().position(|c| &c.name == name));
        statuses
    }

    async fn run_client(self: &Arc<Self>, client: &ClientPlan) -> ClientStatus {
        let resuming = self.resume.is_some();
        for host in client
            .hosts
            .iter()
            .filter(|h| h.skipped.is_some() && !resuming)
        {
            self.events.emit(Event::HostFinished {
                client: client.name.clone(),
                host: host.name.clone(),
                status: HostStatus::Skipped,
                error: host.skipped.clone(),
                protection_gap_ms: None,
            });
        }
        let state = Arc::new(ClientState {
            failed: AtomicUsize::new(0),
            halted: AtomicBool::new(false),
            reason: Mutex::new(None),
        });
        let permits = Arc::new(Semaphore::new(client.concurrency));
        // Each wave names its hosts; where they are in the client's plan
        // is looked up once here, not searched for each host.
        let places: HashMap<&str, usize> = client
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        let client_index = self
            .plan
            .clients
            .iter()
            .position(|c| std::ptr::eq(c, client))
            .unwrap_or(0);
        let mut any_failed = false;
        let mut ran_a_wave = false;
        for wave in &client.waves {
            // Resuming: hosts already done are not touched again, and a
            // wave with nothing left to do is passed over, without a pause.
            let todo: Vec<String> = wave
                .hosts
                .iter()
                .filter(|h| {
                    !matches!(
                        self.start_of(h),
                        super::HostResume::Done | super::HostResume::Leave
                    )
                })
                .cloned()
                .collect();
            if todo.is_empty() {
                continue;
            }
            let mut stopping =
                state.halted.load(Ordering::SeqCst) || self.interrupt.soft.is_cancelled();
            if !stopping && ran_a_wave {
                if let Err(reason) = self.pause(client, wave.index, &state).await {
                    self.halt(client, &state, reason);
                }
                stopping =
                    state.halted.load(Ordering::SeqCst) || self.interrupt.soft.is_cancelled();
            }
            // A halt or an interruption starts no new host; but a host a
            // crash caught half-way is not new: it goes on (or, when
            // interrupted, is rolled back) whatever happens.
            let todo: Vec<String> = if stopping {
                let (mid_way, fresh): (Vec<String>, Vec<String>) = todo
                    .into_iter()
                    .partition(|h| matches!(self.start_of(h), super::HostResume::Continue(_)));
                self.not_started(client, &fresh, &state);
                if mid_way.is_empty() {
                    continue;
                }
                mid_way
            } else {
                todo
            };
            ran_a_wave = true;
            self.events.emit(Event::WaveStarted {
                client: client.name.clone(),
                wave: wave.index,
                hosts: todo.clone(),
            });
            let mut hosts = tokio::task::JoinSet::new();
            for name in &todo {
                let Some(&host_index) = places.get(name.as_str()) else {
                    continue;
                };
                let client_permit = Arc::clone(&permits)
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let fork = Arc::clone(&self.forks)
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let this = Arc::clone(self);
                let state = Arc::clone(&state);
                let wave_index = wave.index;
                hosts.spawn(async move {
                    let _permits = (client_permit, fork);
                    let client = &this.plan.clients[client_index];
                    let host = &client.hosts[host_index];
                    this.run_one(client, host, wave_index, &state).await
                });
            }
            while let Some(done) = hosts.join_next().await {
                if let Ok(status) = done {
                    any_failed |= status.is_failure();
                }
            }
            self.events.emit(Event::WaveFinished {
                client: client.name.clone(),
                wave: wave.index,
                failed_so_far: state.failed.load(Ordering::SeqCst),
                allowed_failures: client.allowed_failures,
            });
        }
        let status = if state.halted.load(Ordering::SeqCst) {
            ClientStatus::Halted
        } else if self.interrupt.soft.is_cancelled() {
            ClientStatus::Interrupted
        } else if any_failed {
            ClientStatus::Failed
        } else {
            ClientStatus::Succeeded
        };
        self.events.emit(Event::ClientFinished {
            client: client.name.clone(),
            status,
        });
        status
    }

    async fn run_one(
        self: &Arc<Self>,
        client: &ClientPlan,
        host: &HostPlan,
        wave: usize,
        state: &ClientState,
    ) -> HostStatus {
        let name = host.name.as_str();
        let resume = match self.start_of(name) {
            super::HostResume::Continue(carried) => Some(carried),
            _ => None,
        };
        let stopping = state.halted.load(Ordering::SeqCst) || self.interrupt.soft.is_cancelled();
        if stopping && resume.is_none() {
            self.not_started(client, &[name.to_string()], state);
            return HostStatus::NotStarted;
        }
        self.events.emit(Event::HostStarted {
            client: client.name.clone(),
            host: name.to_string(),
            wave,
        });
        let run = HostRun {
            plan: &self.plan,
            host,
            resume,
            events: &self.events,
            redactor: &self.redactor,
            stop: &self.interrupt.soft,
            check: self.check,
            confirm: self.confirm.as_ref(),
            clock: self.clock,
        };
        let status = run_host(run, &self.connectors).await;
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), status);
        // A host rolled back because of Ctrl-C did not fail on its own: it
        // does not count against the budget (the client stops anyway).
        let interrupted = self.interrupt.soft.is_cancelled() && status.rolled_back();
        if status.is_failure() && !interrupted {
            let failed = state.failed.fetch_add(1, Ordering::SeqCst) + 1;
            if failed > client.allowed_failures {
                self.halt(
                    client,
                    state,
                    format!(
                        "{failed} host{} failed, more than the failure budget of {} allows ({}); fix the cause, then resume the run",
                        if failed == 1 { "" } else { "s" },
                        client.failure_budget,
                        client.allowed_failures
                    ),
                );
            }
        }
        status
    }

    fn start_of(&self, host: &str) -> super::HostResume {
        self.resume
            .as_ref()
            .and_then(|r| r.get(host).cloned())
            .unwrap_or(super::HostResume::Fresh)
    }

    fn halt(&self, client: &ClientPlan, state: &ClientState, reason: String) {
        if !state.halted.swap(true, Ordering::SeqCst) {
            *state.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            self.events.emit(Event::ClientHalted {
                client: client.name.clone(),
                reason,
            });
        }
    }

    fn not_started(&self, client: &ClientPlan, hosts: &[String], state: &ClientState) {
        let reason = if state.halted.load(Ordering::SeqCst) {
            "the client was halted".to_string()
        } else {
            "the run was interrupted".to_string()
        };
        for host in hosts {
            self.events.emit(Event::HostNotStarted {
                client: client.name.clone(),
                host: host.clone(),
                reason: reason.clone(),
            });
        }
    }

    /// Waits between waves; `Err` halts the client.
    async fn pause(
        &self,
        client: &ClientPlan,
        next_wave: usize,
        state: &ClientState,
    ) -> Result<(), String> {
        match client.pause_between_waves {
            Pause::Wait(d) if d.0.is_zero() => Ok(()),
            Pause::Wait(d) => {
                self.events.emit(Event::Paused {
                    client: client.name.clone(),
                    next_wave,
                    reason: format!("waiting {d} before wave {next_wave}"),
                });
                tokio::select! {
                    _ = tokio::time::sleep(d.0) => {}
                    _ = self.interrupt.soft.cancelled() => {}
                }
                Ok(())
            }
            Pause::Confirm => {
                self.events.emit(Event::Paused {
                    client: client.name.clone(),
                    next_wave,
                    reason: format!("waiting for confirmation before wave {next_wave}"),
                });
                let so_far = format!(
                    "{} of {} allowed failures so far",
                    state.failed.load(Ordering::SeqCst),
                    client.allowed_failures
                );
                tokio::select! {
                    answer = self.confirm.confirm(&client.name, next_wave, &so_far) => answer,
                    _ = self.interrupt.soft.cancelled() => Ok(()),
                }
            }
        }
    }
}
