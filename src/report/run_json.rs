//! The run report (`--report-json`), in the shape the README shows under
//! "Report", built from the runner's events.
//!
//! [`ReportBuilder`] is an observer: it folds events into a [`Report`] as
//! they come, so a report exists whatever way the run ends (success, halt,
//! Ctrl-C). The same shape is what the journal will rebuild for
//! `orchestrate report --format json`.

use std::collections::{HashMap, HashSet};
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
    /// Where each host's record is (`clients[c].hosts[h]`), so that folding
    /// an event costs the same in a fleet of 10,000 as in one of 10. A
    /// hint, checked on use: a stale or missing entry falls back to a scan.
    #[serde(skip)]
    places: HashMap<String, (usize, usize)>,
    /// Every phase, step name and output the records hold, each once:
    /// hosts of a fleet repeat the same names, and mostly the same output
    /// ("Defender is active"), step after step.
    #[serde(skip)]
    texts: HashSet<Arc<str>>,
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

impl RebootReport {
    /// Who the reboot cut off, as every report says it.
    pub fn who(&self) -> String {
        if self.step.is_empty() && self.logged_on.is_empty() && self.logged_on_unknown.is_none() {
            // A journal from before reboots recorded their step and who was
            // logged on: nobody was asked, which is not "nobody was there".
            return "who was logged on was not recorded".to_string();
        }
        match (&self.logged_on_unknown, self.logged_on.as_slice()) {
            (Some(why), _) => format!("who was logged on is not known: {why}"),
            (None, []) => "nobody was logged on".to_string(),
            (None, users) => format!("logged on: {}", users.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    #[serde(serialize_with = "text")]
    pub phase: Arc<str>,
    #[serde(serialize_with = "text")]
    pub name: Arc<str>,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub detail: Option<String>,
    pub finished_at: String,
    /// Redacted and capped; `None` for sensitive steps.
    #[serde(serialize_with = "some_text")]
    pub stdout: Option<Arc<str>>,
    #[serde(serialize_with = "some_text")]
    pub stderr: Option<Arc<str>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    #[serde(serialize_with = "text")]
    pub name: Arc<str>,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
    pub finished_at: String,
    #[serde(serialize_with = "some_text")]
    pub stdout: Option<Arc<str>>,
    #[serde(serialize_with = "some_text")]
    pub stderr: Option<Arc<str>>,
}

/// A shared text, written as the string it is.
fn text<S: serde::Serializer>(text: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(text)
}

fn some_text<S: serde::Serializer>(text: &Option<Arc<str>>, out: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => out.serialize_some(&**text),
        None => out.serialize_none(),
    }
}

impl Report {
    pub fn hosts(&self) -> impl Iterator<Item = &HostReport> {
        self.clients.iter().flat_map(|c| c.hosts.iter())
    }

    fn host_mut(&mut self, client: &str, host: &str) -> Option<&mut HostReport> {
        let (c, h) = self.place_of(client, host)?;
        Some(&mut self.clients[c].hosts[h])
    }

    /// Where the record of `host` of `client` is: from the index when it
    /// is right there, else found by a scan (and remembered).
    fn place_of(&mut self, client: &str, host: &str) -> Option<(usize, usize)> {
        let at = |clients: &[ClientReport], (c, h): (usize, usize)| {
            clients
                .get(c)
                .filter(|r| r.name == client)
                .and_then(|r| r.hosts.get(h))
                .is_some_and(|r| r.name == host)
        };
        if let Some(&place) = self.places.get(host)
            && at(&self.clients, place)
        {
            return Some(place);
        }
        let c = self.clients.iter().position(|c| c.name == client)?;
        let h = self.clients[c].hosts.iter().position(|h| h.name == host)?;
        self.places.insert(host.to_string(), (c, h));
        Some((c, h))
    }

    /// The one copy of `text` the report holds.
    fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(kept) = self.texts.get(text) {
            return Arc::clone(kept);
        }
        let kept: Arc<str> = Arc::from(text);
        self.texts.insert(Arc::clone(&kept));
        kept
    }

    fn share_some(&mut self, text: &Option<String>) -> Option<Arc<str>> {
        text.as_deref().map(|t| self.share(t))
    }

    /// Indexes every host's record (after the clients were laid out).
    fn index_places(&mut self) {
        self.places = self
            .clients
            .iter()
            .enumerate()
            .flat_map(|(c, client)| {
                client
                    .hosts
                    .iter()
                    .enumerate()
                    .map(move |(h, host)| (host.name.clone(), (c, h)))
            })
            .collect();
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
                self.index_places();
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
                let record = StepReport {
                    phase: self.share(&step.phase),
                    name: self.share(&step.name),
                    status: step.status,
                    exit_code: step.exit_code,
                    attempts: step.attempts,
                    duration_ms: step.duration_ms,
                    detail: step.detail.clone(),
                    finished_at: time.to_string(),
                    stdout: self.share_some(&step.stdout),
                    stderr: self.share_some(&step.stderr),
                };
                if let Some(h) = self.host_mut(client, host) {
                    h.waiting = None;
                    h.steps.push(record);
                }
            }
            Event::RollbackStepFinished { client, host, step } => {
                let record = RollbackReport {
                    name: self.share(&step.name),
                    status: step.status,
                    exit_code: step.exit_code,
                    detail: step.detail.clone(),
                    finished_at: time.to_string(),
                    stdout: self.share_some(&step.stdout),
                    stderr: self.share_some(&step.stderr),
                };
                if let Some(h) = self.host_mut(client, host) {
                    h.rollback.push(record);
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
                    // Kept to the run's end: without the room they grew
                    // into (up to twice what they hold), times every host.
                    h.steps.shrink_to_fit();
                    h.rollback.shrink_to_fit();
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

    /// The report, taken out once the run is over (an event after that
    /// lands in an empty report): a copy of a fleet's report would double
    /// what the run holds at its very end.
    pub fn take(&self) -> Report {
        std::mem::take(&mut *self.report.lock().unwrap_or_else(|p| p.into_inner()))
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

/// Writes [`render`]'s text to `out` as it is made, without holding all
/// of it (a fleet's report runs to tens of megabytes).
pub fn write(report: &Report, out: impl std::io::Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    serde_json::to_writer_pretty(&mut out, report).map_err(std::io::Error::from)?;
    std::io::Write::flush(&mut out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::events::{ClientInfo, HostInfo};

    #[test]
    fn a_reboot_says_who_it_cut_off_and_an_old_record_that_nobody_asked() {
        let reboot = |step: &str, logged_on: &[&str], unknown: Option<&str>| RebootReport {
            step: step.into(),
            at: "t".into(),
            logged_on: logged_on.iter().map(|u| u.to_string()).collect(),
            logged_on_unknown: unknown.map(String::from),
        };
        assert_eq!(
            reboot("s", &["alice (console, Active)"], None).who(),
            "logged on: alice (console, Active)"
        );
        assert_eq!(reboot("s", &[], None).who(), "nobody was logged on");
        assert_eq!(
            reboot("s", &[], Some("quser is not there")).who(),
            "who was logged on is not known: quser is not there"
        );
        // Journals from before the step and the users were recorded.
        assert_eq!(
            reboot("", &[], None).who(),
            "who was logged on was not recorded"
        );
    }

    fn started(clients: &[(&str, &[&str])]) -> Event {
        Event::RunStarted {
            run_id: "r".into(),
            playbook: "p.yml".into(),
            inventory: "i.yml".into(),
            started_at: "t0".into(),
            check: false,
            rehearsal: false,
            clients: clients
                .iter()
                .map(|(name, hosts)| ClientInfo {
                    name: name.to_string(),
                    waves: Vec::new(),
                    allowed_failures: 0,
                    hosts: hosts
                        .iter()
                        .map(|h| HostInfo {
                            name: h.to_string(),
                            wave: Some(1),
                            skipped: None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn finished(client: &str, host: &str, status: HostStatus) -> Event {
        Event::HostFinished {
            client: client.into(),
            host: host.into(),
            status,
            error: None,
            protection_gap_ms: None,
        }
    }

    fn status(report: &Report, host: &str) -> HostStatus {
        report.hosts().find(|h| h.name == host).unwrap().status
    }

    #[test]
    fn each_event_lands_on_its_own_hosts_record_in_a_large_fleet() {
        let names: Vec<String> = (0..2000).map(|n| format!("ws{n:05}")).collect();
        let (a, b): (Vec<&str>, Vec<&str>) = names
            .iter()
            .map(String::as_str)
            .partition(|n| n.ends_with(['0', '2', '4', '6', '8']));
        let mut report = Report::default();
        report.apply(&started(&[("a", &a), ("b", &b)]), "t0");
        report.apply(&finished("b", "ws01999", HostStatus::Failed), "t1");
        report.apply(&finished("a", "ws00000", HostStatus::Succeeded), "t2");
        // A host named under the wrong client is not another client's record.
        report.apply(&finished("a", "ws01999", HostStatus::Succeeded), "t3");
        assert_eq!(status(&report, "ws01999"), HostStatus::Failed);
        assert_eq!(status(&report, "ws00000"), HostStatus::Succeeded);
        assert_eq!(status(&report, "ws00001"), HostStatus::NotStarted);
        let failed = report.hosts().find(|h| h.name == "ws01999").unwrap();
        assert_eq!(failed.finished_at.as_deref(), Some("t1"));
    }

    #[test]
    fn a_report_laid_out_again_finds_its_hosts_where_they_are_now() {
        let mut report = Report::default();
        report.apply(&started(&[("a", &["h1", "h2"])]), "t0");
        // A second start (a report seeded from the journal, then started
        // again) lays the records out anew, in another order.
        report.apply(&started(&[("b", &["h9"]), ("a", &["h2", "h1"])]), "t1");
        report.apply(&finished("a", "h1", HostStatus::Failed), "t2");
        assert_eq!(status(&report, "h1"), HostStatus::Failed);
        assert_eq!(status(&report, "h2"), HostStatus::NotStarted);
        assert_eq!(report.clients[1].hosts[1].name, "h1");
        // Records put in place by hand (no index yet) are found too.
        report.clients[1].hosts.swap(0, 1);
        report.apply(&finished("a", "h2", HostStatus::Succeeded), "t3");
        assert_eq!(status(&report, "h2"), HostStatus::Succeeded);
        assert_eq!(status(&report, "h1"), HostStatus::Failed);
    }

    #[test]
    fn the_report_written_as_it_is_made_is_the_rendered_text_and_is_taken_not_copied() {
        let mut builder = ReportBuilder::default();
        builder.on_event(chrono::Utc::now(), &started(&[("a", &["h1", "h2"])]));
        builder.on_event(
            chrono::Utc::now(),
            &finished("a", "h2", HostStatus::Succeeded),
        );
        let report = builder.take();
        let mut written = Vec::new();
        write(&report, &mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), render(&report));
        assert_eq!(status(&report, "h2"), HostStatus::Succeeded);
        assert!(builder.snapshot().clients.is_empty(), "taken, not copied");
    }

    fn step_done(client: &str, host: &str, stdout: &str) -> Event {
        Event::StepFinished {
            client: client.into(),
            host: host.into(),
            step: crate::run::StepRecord {
                phase: "install".into(),
                name: "turn Defender on".into(),
                index: 0,
                status: StepStatus::Ok,
                exit_code: Some(0),
                attempts: 1,
                duration_ms: 5,
                detail: None,
                stdout: Some(stdout.into()),
                stderr: None,
                check_safe: false,
                capture: None,
            },
        }
    }

    #[test]
    fn names_and_outputs_that_hosts_repeat_are_held_once() {
        let mut report = Report::default();
        report.apply(&started(&[("a", &["h1", "h2"])]), "t0");
        report.apply(&step_done("a", "h1", "Defender is active (Normal)."), "t1");
        report.apply(&step_done("a", "h2", "Defender is active (Normal)."), "t2");
        report.apply(&step_done("a", "h2", "something else"), "t3");
        let (h1, h2) = (&report.clients[0].hosts[0], &report.clients[0].hosts[1]);
        assert!(Arc::ptr_eq(&h1.steps[0].name, &h2.steps[0].name));
        let out = |s: &StepReport| s.stdout.clone().unwrap();
        assert!(Arc::ptr_eq(&out(&h1.steps[0]), &out(&h2.steps[0])));
        assert_eq!(&*out(&h2.steps[1]), "something else");
        assert_eq!(h2.steps[1].finished_at, "t3");
        let json: serde_json::Value = serde_json::from_str(&render(&report)).unwrap();
        assert_eq!(
            json["clients"][0]["hosts"][1]["steps"][0]["stdout"],
            "Defender is active (Normal)."
        );
    }
}
