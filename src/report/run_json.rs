//! The run report (`--report-json`), in the shape the README shows under
//! "Report", built from the runner's events.
//!
//! [`ReportBuilder`] is an observer: it folds events into a [`Report`] as
//! they come, so a report exists whatever way the run ends (success, halt,
//! Ctrl-C). The same shape is what the journal will rebuild for
//! `orchestrate report --format json`.

use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use serde::Serialize;

use crate::run::baseline::ProbeDiff;
use crate::run::{ClientStatus, Event, HostStatus, Observer, RunStatus, StepStatus};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub run_id: String,
    pub playbook: String,
    pub status: Option<RunStatus>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub check: bool,
    /// A rehearsal on the simulated fleet (`orchestrate rehearse`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
    pub clients: Vec<ClientReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    pub name: String,
    pub status: Option<ClientStatus>,
    /// Why the client halted, if it did.
    pub halted: Option<String>,
    pub waves: Vec<WaveReport>,
    pub hosts: Vec<HostReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaveReport {
    pub index: usize,
    pub hosts: Vec<String>,
    /// RFC 3339; `None` for a wave that never started.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub name: String,
    pub wave: Option<usize>,
    pub status: HostStatus,
    pub error: Option<String>,
    pub protection_gap_ms: Option<u64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub steps: Vec<StepReport>,
    pub rollback: Vec<RollbackReport>,
    /// Per probe, what differs between before and after (or, with
    /// `--check`, what was recorded).
    pub baseline: Vec<ProbeDiff>,
    /// While its reboot waits (`reboot: window | ask`): why, and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Each reboot, in order, with who was logged on just before it.
    pub reboots: Vec<RebootReport>,
}

/// One reboot of a host: which step asked, when, and whose sessions it cut.
#[derive(Debug, Clone, Serialize)]
pub struct RebootReport {
    pub step: String,
    pub at: String,
    /// Each session as `name (session, state)`; empty: nobody (or unknown).
    pub logged_on: Vec<String>,
    /// Why who was logged on is not known, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logged_on_unknown: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub phase: String,
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub detail: Option<String>,
    pub finished_at: String,
    /// Redacted and capped; `None` for sensitive steps.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
    pub finished_at: String,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

impl Report {
    pub fn hosts(&self) -> impl Iterator<Item = &HostReport> {
        self.clients.iter().flat_map(|c| c.hosts.iter())
    }

    fn host_mut(&mut self, client: &str, host: &str) -> Option<&mut HostReport> {
        self.clients
            .iter_mut()
            .find(|c| c.name == client)?
            .hosts
            .iter_mut()
            .find(|h| h.name == host)
    }

    fn wave_mut(&mut self, client: &str, wave: usize) -> Option<&mut WaveReport> {
        self.client_mut(client)?
            .waves
            .iter_mut()
            .find(|w| w.index == wave)
    }

    fn client_mut(&mut self, client: &str) -> Option<&mut ClientReport> {
        self.clients.iter_mut().find(|c| c.name == client)
    }

    /// Folds one event, which happened at `time` (RFC 3339), into the report.
    pub fn apply(&mut self, event: &Event, time: &str) {
        match event {
            Event::RunStarted {
                run_id,
                playbook,
                started_at,
                check,
                rehearsal,
                clients,
                ..
            } => {
                self.rehearsal = *rehearsal;
                self.run_id = run_id.clone();
                self.playbook = playbook.clone();
                self.started_at = started_at.clone();
                self.check = *check;
                self.clients = clients
                    .iter()
                    .map(|c| ClientReport {
                        name: c.name.clone(),
                        status: None,
                        halted: None,
                        waves: c
                            .waves
                            .iter()
                            .map(|w| WaveReport {
                                index: w.index,
                                hosts: w.hosts.clone(),
                                started_at: None,
                                finished_at: None,
                            })
                            .collect(),
                        hosts: c
                            .hosts
                            .iter()
                            .map(|h| HostReport {
                                name: h.name.clone(),
                                wave: h.wave,
                                status: if h.skipped.is_some() {
                                    HostStatus::Skipped
                                } else {
                                    HostStatus::NotStarted
                                },
                                error: h.skipped.clone(),
                                protection_gap_ms: None,
                                started_at: None,
                                finished_at: None,
                                steps: Vec::new(),
                                rollback: Vec::new(),
                                baseline: Vec::new(),
                                waiting: None,
                                reboots: Vec::new(),
                            })
                            .collect(),
                    })
                    .collect();
            }
            Event::RunResumed { .. } => {
                self.status = None;
                self.finished_at = None;
                for client in &mut self.clients {
                    client.status = None;
                    client.halted = None;
                }
            }
            Event::RebootWaiting {
                client,
                host,
                reason,
                ..
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.waiting = Some(reason.clone());
                }
            }
            Event::Rebooting {
                client,
                host,
                step,
                logged_on,
                logged_on_unknown,
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.waiting = None;
                    h.reboots.push(RebootReport {
                        step: step.clone(),
                        at: time.to_string(),
                        logged_on: logged_on.clone(),
                        logged_on_unknown: logged_on_unknown.clone(),
                    });
                }
            }
            Event::StepFinished { client, host, step } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.waiting = None;
                    h.steps.push(StepReport {
                        phase: step.phase.clone(),
                        name: step.name.clone(),
                        status: step.status,
                        exit_code: step.exit_code,
                        attempts: step.attempts,
                        duration_ms: step.duration_ms,
                        detail: step.detail.clone(),
                        finished_at: time.to_string(),
                        stdout: step.stdout.clone(),
                        stderr: step.stderr.clone(),
                    });
                }
            }
            Event::RollbackStepFinished { client, host, step } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.rollback.push(RollbackReport {
                        name: step.name.clone(),
                        status: step.status,
                        exit_code: step.exit_code,
                        detail: step.detail.clone(),
                        finished_at: time.to_string(),
                        stdout: step.stdout.clone(),
                        stderr: step.stderr.clone(),
                    });
                }
            }
            Event::BaselineTaken {
                client,
                host,
                probes,
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.baseline = probes.iter().map(ProbeDiff::recorded).collect();
                }
            }
            Event::BaselineCompared {
                client,
                host,
                probes,
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.baseline = probes.clone();
                }
            }
            Event::HostFinished {
                client,
                host,
                status,
                error,
                protection_gap_ms,
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.status = *status;
                    h.error = error.clone();
                    h.protection_gap_ms = *protection_gap_ms;
                    if *status != HostStatus::Skipped {
                        h.finished_at = Some(time.to_string());
                    }
                }
            }
            Event::HostStarted { client, host, .. } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.started_at = Some(time.to_string());
                    h.finished_at = None;
                }
            }
            Event::WaveStarted { client, wave, .. } => {
                if let Some(w) = self.wave_mut(client, *wave) {
                    w.started_at = Some(time.to_string());
                    w.finished_at = None;
                }
            }
            Event::WaveFinished { client, wave, .. } => {
                if let Some(w) = self.wave_mut(client, *wave) {
                    w.finished_at = Some(time.to_string());
                }
            }
            Event::HostNotStarted {
                client,
                host,
                reason,
            } => {
                if let Some(h) = self.host_mut(client, host) {
                    h.status = HostStatus::NotStarted;
                    h.error = Some(reason.clone());
                }
            }
            Event::ClientHalted { client, reason } => {
                if let Some(c) = self.client_mut(client) {
                    c.halted = Some(reason.clone());
                }
            }
            Event::ClientFinished { client, status } => {
                if let Some(c) = self.client_mut(client) {
                    c.status = Some(*status);
                }
            }
            Event::RunFinished {
                status,
                finished_at,
            } => {
                self.finished_at = Some(finished_at.clone());
                // As the runner decided it (`run::RunOutcome`).
                self.status = Some(*status);
                for client in &mut self.clients {
                    if client.status.is_none() {
                        client.status = Some(ClientStatus::Interrupted);
                    }
                    // Stopped at once (a second Ctrl-C) in the middle of a
                    // step: nobody knows how far the host got; say so.
                    for host in &mut client.hosts {
                        // (A check run changes nothing: nothing to look at.)
                        if host.started_at.is_some() && host.finished_at.is_none() && !self.check {
                            // Neither finished nor rolled back: a person
                            // must look (or resume the run, which goes on
                            // with it). The run itself stays `interrupted`.
                            host.status = HostStatus::RollbackFailed;
                            host.error = Some(
                                "stopped at once while a step ran on this host: its state is unknown; resume the run to finish it".into(),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Builds a [`Report`] from events; read it through the shared handle.
#[derive(Clone, Default)]
pub struct ReportBuilder {
    pub report: Arc<Mutex<Report>>,
}

impl ReportBuilder {
    pub fn snapshot(&self) -> Report {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Observer for ReportBuilder {
    fn on_event(&mut self, at: chrono::DateTime<chrono::Utc>, event: &Event) {
        let time = crate::run::timestamp(at);
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(event, &time);
    }
}

/// Per client, host counts by status, in a fixed order.
pub fn counts(client: &ClientReport) -> IndexMap<HostStatus, usize> {
    let mut counts: IndexMap<HostStatus, usize> =
        HostStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    for host in &client.hosts {
        *counts.entry(host.status).or_default() += 1;
    }
    counts
}

pub fn render(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report serializes")
}
