//! Live output as plain lines, for logs and terminals without bars (CI,
//! `| tee`, a cron job): one line per wave, per finished host, per halt.

use std::io::Write;

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
                "{client}: wave {wave} ({} host{})",
                hosts.len(),
                if hosts.len() == 1 { "" } else { "s" }
            )),
            Event::Paused { client, reason, .. } => Some(format!("{client}: {reason}")),
            Event::ClientHalted { client, reason } => Some(format!("{client}: HALTED: {reason}")),
            Event::HostFinished { client, host, status, error, .. } if *status != HostStatus::Skipped => {
                Some(match error {
                    Some(e) => format!("  {} {client}/{host}: {e}", label(*status)),
                    None => format!("  {} {client}/{host}", label(*status)),
                })
            }
            Event::RollbackStarted { client, host, .. } => Some(format!("  rolling back {client}/{host}")),
            Event::StepFinished { host, step, .. } if self.verbose || step.status == StepStatus::Failed => {
                Some(format!(
                    "    {host}: {} `{}` ({}){}",
                    name_of(&step.status),
                    step.name,
                    step.phase,
                    step.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
                ))
            }
            Event::Interrupting => Some(
                "interrupted: no new host or step starts; running steps finish and half-done hosts are rolled back (Ctrl-C again to stop at once)".into(),
            ),
            _ => None,
        };
        if let Some(line) = line {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}
