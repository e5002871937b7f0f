//! Live output as plain lines, for logs and terminals without bars (CI,
//! `| tee`, a cron job): one line per wave, per finished host, per halt.
//! Names and messages are drawn through [`inert`]: they came from the
//! inventory or the endpoints.

use std::io::Write;

use super::terminal::inert;
use crate::run::{Event, HostStatus, Observer, StepStatus, name_of};

pub struct Lines<W: Write + Send> {
    out: W,
    verbose: bool,
}

impl<W: Write + Send> Lines<W> {
    pub fn new(out: W, verbose: bool) -> Self {
        Lines { out, verbose }
    }
}

fn label(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Succeeded => "    OK",
        HostStatus::Failed => "FAILED",
        HostStatus::RolledBackToUnsupportedProduct => "FAILED, BACK ON UNSUPPORTED PRODUCT",
        HostStatus::RollbackFailed => "ROLLBACK FAILED",
        HostStatus::Unreachable => "UNREACHABLE",
        HostStatus::Skipped => "  SKIP",
        HostStatus::NotStarted => "NOT STARTED",
    }
}

impl<W: Write + Send> Observer for Lines<W> {
    fn on_event(&mut self, _at: chrono::DateTime<chrono::Utc>, event: &Event) {
        let line = match event {
            Event::WaveStarted { client, wave, hosts } => Some(format!(
                "{}: wave {wave} ({} host{})",
                inert(client),
                hosts.len(),
                if hosts.len() == 1 { "" } else { "s" }
            )),
            Event::Paused { client, reason, .. } => Some(format!("{}: {}", inert(client), inert(reason))),
            Event::ClientHalted { client, reason } => {
                Some(format!("{}: HALTED: {}", inert(client), inert(reason)))
            }
            Event::HostFinished { client, host, status, error, .. } if *status != HostStatus::Skipped => {
                let (client, host) = (inert(client), inert(host));
                Some(match error {
                    Some(e) => format!("  {} {client}/{host}: {}", label(*status), inert(e)),
                    None => format!("  {} {client}/{host}", label(*status)),
                })
            }
            Event::RebootWaiting { client, host, reason, .. } => {
                Some(format!("  WAITING {}/{}: {}", inert(client), inert(host), inert(reason)))
            }
            // A reboot that cuts sessions (or may) says whose, as it starts.
            Event::Rebooting { client, host, logged_on, logged_on_unknown, .. }
                if !logged_on.is_empty() || logged_on_unknown.is_some() =>
            {
                let who = match logged_on_unknown {
                    Some(why) => format!("who is logged on is not known ({why})"),
                    None => format!("logged on: {}", logged_on.join(", ")),
                };
                Some(format!("  rebooting {}/{}; {}", inert(client), inert(host), inert(&who)))
            }
            Event::RollbackStarted { client, host, .. } => {
                Some(format!("  rolling back {}/{}", inert(client), inert(host)))
            }
            Event::StepFinished { host, step, .. } if self.verbose || step.status == StepStatus::Failed => {
                Some(format!(
                    "    {}: {} `{}` ({}){}",
                    inert(host),
                    name_of(&step.status),
                    inert(&step.name),
                    inert(&step.phase),
                    step.detail.as_ref().map(|d| format!(": {}", inert(d))).unwrap_or_default()
                ))
            }
            Event::BaselineCompared { host, probes, .. } => {
                let flagged: Vec<String> = probes
                    .iter()
                    .filter(|d| d.fails_host() || d.warns())
                    .map(|d| {
                        let level = if d.warns() { "warning" } else { "regression" };
                        format!("    {}: {level}: {}", inert(host), inert(&d.summary()))
                    })
                    .collect();
                (!flagged.is_empty()).then(|| flagged.join("\n"))
            }
            Event::Interrupting => Some(
                "interrupted: no new host or step starts; running steps finish and half-done hosts are rolled back (a second Ctrl-C, SIGTERM or SIGHUP stops at once)".into(),
            ),
            _ => None,
        };
        if let Some(line) = line {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}
