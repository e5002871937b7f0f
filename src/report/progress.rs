//! Progress bars for a terminal: one for the whole run, one per client,
//! with host counts by state. The bars are tracing spans drawn by
//! tracing-indicatif, so log lines (halts, rollbacks, failures, emitted
//! here as tracing events) print above the bars instead of tearing them.
//! Names and messages are drawn through [`inert`]: they came from the
//! inventory or the endpoints.

use std::collections::{HashMap, HashSet};

use indicatif::ProgressStyle;
use tracing::{Span, info_span, warn};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::terminal::inert;
use crate::run::{Event, HostStatus, Observer};

#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
    /// Rolled back to a product that no longer gets updates.
    unsupported: u64,
    unreachable: u64,
    not_started: u64,
    running: u64,
    /// Running hosts whose reboot waits (a window, an answer).
    waiting: u64,
}

impl Counts {
    fn message(&self) -> String {
        let unsupported = if self.unsupported > 0 {
            format!(" (unsupported product {})", self.unsupported)
        } else {
            String::new()
        };
        let waiting = if self.waiting > 0 {
            format!(" (waiting to reboot {})", self.waiting)
        } else {
            String::new()
        };
        format!(
            "running {}{waiting}  ok {}  failed {}{unsupported}  unreachable {}  not started {}",
            self.running, self.ok, self.failed, self.unreachable, self.not_started
        )
    }
}

#[derive(Default)]
pub struct Progress {
    overall: Option<Span>,
    clients: HashMap<String, (Span, Counts)>,
    total: Counts,
    /// Hosts whose reboot waits, by (client, host).
    waiting: HashSet<(String, String)>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Observer for Progress {
    fn on_event(&mut self, _at: chrono::DateTime<chrono::Utc>, event: &Event) {
        match event {
            Event::RunStarted { clients, .. } => {
                let overall = info_span!("run");
                let planned: usize = clients
                    .iter()
                    .map(|c| c.hosts.iter().filter(|h| h.skipped.is_none()).count())
                    .sum();
                overall.pb_set_style(&style(
                    "{elapsed_precise} all clients [{bar:30}] {pos}/{len} hosts  {msg}",
                ));
                overall.pb_set_length(planned as u64);
                overall.pb_start();
                for c in clients {
                    let span = info_span!(parent: &overall, "client", name = %inert(&c.name));
                    span.pb_set_style(&style("  [{bar:30}] {pos}/{len}  {msg}"));
                    span.pb_set_length(
                        c.hosts.iter().filter(|h| h.skipped.is_none()).count() as u64
                    );
                    span.pb_start();
                    span.pb_set_message(&inert(&c.name));
                    self.clients
                        .insert(c.name.clone(), (span, Counts::default()));
                }
                self.overall = Some(overall);
            }
            Event::HostStarted { client, .. } => self.update(client, |c| c.running += 1, 0),
            Event::RebootWaiting {
                client,
                host,
                reason,
                ..
            } => {
                tracing::info!("{}/{}: {}", inert(client), inert(host), inert(reason));
                if self.waiting.insert((client.clone(), host.clone())) {
                    self.update(client, |c| c.waiting += 1, 0);
                }
            }
            Event::Rebooting { client, host, .. } | Event::StepFinished { client, host, .. } => {
                self.done_waiting(client, host)
            }
            Event::HostFinished {
                client,
                status,
                host,
                error,
                ..
            } => {
                let status = *status;
                if status == HostStatus::Skipped {
                    return;
                }
                self.done_waiting(client, host);
                if status.is_failure() {
                    warn!(
                        "{}/{}: {} {}",
                        inert(client),
                        inert(host),
                        status.as_str(),
                        inert(error.as_deref().unwrap_or(""))
                    );
                }
                self.update(
                    client,
                    |c| {
                        c.running = c.running.saturating_sub(1);
                        match status {
                            HostStatus::Succeeded => c.ok += 1,
                            HostStatus::Unreachable => c.unreachable += 1,
                            HostStatus::NotStarted => c.not_started += 1,
                            HostStatus::RolledBackToUnsupportedProduct => {
                                c.failed += 1;
                                c.unsupported += 1;
                            }
                            _ => c.failed += 1,
                        }
                    },
                    1,
                );
            }
            Event::HostNotStarted { client, .. } => self.update(client, |c| c.not_started += 1, 1),
            Event::ClientHalted { client, reason } => {
                warn!("{} halted: {}", inert(client), inert(reason))
            }
            Event::RollbackStarted {
                client,
                host,
                reason,
            } => warn!(
                "{}/{}: rolling back ({})",
                inert(client),
                inert(host),
                inert(reason)
            ),
            Event::Paused { client, reason, .. } => {
                tracing::info!("{}: {}", inert(client), inert(reason))
            }
            Event::Interrupting => warn!(
                "interrupted: finishing running steps and rolling back half-done hosts; a second Ctrl-C, SIGTERM or SIGHUP stops at once"
            ),
            Event::RunFinished { .. } => {
                self.clients.clear();
                self.overall = None;
            }
            _ => {}
        }
    }
}

impl Progress {
    fn done_waiting(&mut self, client: &str, host: &str) {
        if self.waiting.remove(&(client.to_string(), host.to_string())) {
            self.update(client, |c| c.waiting = c.waiting.saturating_sub(1), 0);
        }
    }

    fn update(&mut self, client: &str, change: impl Fn(&mut Counts), done: u64) {
        if let Some((span, counts)) = self.clients.get_mut(client) {
            change(counts);
            span.pb_inc(done);
            span.pb_set_message(&format!("{}: {}", inert(client), counts.message()));
        }
        change(&mut self.total);
        if let Some(overall) = &self.overall {
            overall.pb_inc(done);
            overall.pb_set_message(&self.total.message());
        }
    }
}
