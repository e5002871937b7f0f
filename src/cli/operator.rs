//! How the operator reaches a running run: the signals that stop it
//! (SIGINT, SIGTERM, SIGHUP) and the answers to `pause_between_waves:
//! confirm` and `reboot: ask`. Kept apart from launching a run because both run for the
//! whole run beside it, on their own task or thread, and neither may ever
//! block a host: a stop is a token the runner watches, an answer arrives
//! over a channel.

use std::sync::Arc;

use async_trait::async_trait;

use crate::run::{Confirm, Event, Events, Interrupt};

/// The signals that stop a run: SIGINT (Ctrl-C), SIGTERM (`kill`,
/// `timeout`, systemd, `docker stop`, a CI cancel) and SIGHUP (the
/// operator's session to the controller dropped). All three mean the same:
/// the first stops the run the soft way (no new host or step, running
/// steps finish, half-done hosts are rolled back, the journal and the
/// report are closed properly); the second, of any kind, stops at once.
pub(super) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Takes the signals over from their default (which kills the process
    /// with no rollback and no record). Must run inside the runtime.
    pub(super) fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for any of the three.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }

    /// First signal: finish gracefully. Second: stop at once.
    pub(super) fn watch(mut self, interrupt: Interrupt, events: Arc<Events>) {
        tokio::spawn(async move {
            self.next().await;
            interrupt.soft.cancel();
            events.emit(Event::Interrupting);
            self.next().await;
            interrupt.hard.cancel();
        });
    }
}

/// `pause_between_waves: confirm` on a terminal.
///
/// Standard input is read by a thread of its own and answers arrive over a
/// channel: nothing blocks while the question waits, so hosts of other
/// clients go on (a rollback under way is never held up by a prompt), and
/// Ctrl-C still works. With progress bars, the question is printed through
/// tracing so that it lands above the bars.
pub(super) struct AskOnTerminal {
    /// One question at a time, when several clients reach a pause together.
    answers: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    bars: bool,
}

impl AskOnTerminal {
    pub(super) fn new(bars: bool) -> AskOnTerminal {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        AskOnTerminal {
            answers: tokio::sync::Mutex::new(rx),
            bars,
        }
    }
}

impl AskOnTerminal {
    /// Asks `question`; true for a yes.
    async fn ask(&self, question: &str) -> bool {
        let mut answers = self.answers.lock().await;
        if self.bars {
            tracing::warn!("{question}");
        } else {
            use std::io::Write;
            eprint!("{question}");
            let _ = std::io::stderr().flush();
        }
        matches!(answers.recv().await, Some(line) if matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
    }
}

#[async_trait]
impl Confirm for AskOnTerminal {
    async fn confirm(&self, client: &str, next_wave: usize, so_far: &str) -> Result<(), String> {
        let question = format!(
            "{}: start wave {next_wave}? ({so_far}) [y/N] ",
            crate::report::terminal::inert(client)
        );
        if self.ask(&question).await {
            Ok(())
        } else {
            Err(format!(
                "the operator did not confirm wave {next_wave}; resume the run to go on"
            ))
        }
    }

    async fn confirm_reboot(&self, client: &str, host: &str, why: &str) -> Result<(), String> {
        use crate::report::terminal::inert;
        let question = format!(
            "{}/{}: reboot now? ({}) [y/N] ",
            inert(client),
            inert(host),
            inert(why)
        );
        if self.ask(&question).await {
            Ok(())
        } else {
            Err(
                "the operator did not confirm the reboot (reboot: ask); the host was not rebooted"
                    .into(),
            )
        }
    }
}

/// `pause_between_waves: confirm` with nobody to ask.
pub(super) struct NoTerminal;

#[async_trait]
impl Confirm for NoTerminal {
    async fn confirm(&self, _client: &str, next_wave: usize, _so_far: &str) -> Result<(), String> {
        Err(format!(
            "wave {next_wave} needs confirmation (pause_between_waves: confirm) and there is no terminal to ask; resume the run with --yes to go on without asking"
        ))
    }

    async fn confirm_reboot(&self, _client: &str, _host: &str, _why: &str) -> Result<(), String> {
        Err("the reboot needs the operator's confirmation (reboot: ask) and there is no terminal to ask; the host was not rebooted (run it on a terminal, or with --yes to reboot without asking)".into())
    }
}
