//! Running one command on one channel: stdin, drained output, exit status,
//! and killing it on timeout or when the caller gives up.
//!
//! Each channel is read by its own task from the moment it opens: russh
//! delivers a connection's messages in order, so a channel nobody reads
//! blocks every other channel of the connection.
//!
//! Killing is layered. First the `signal KILL` channel request, which
//! OpenSSH 7.9+ turns into `killpg` of the session's process group (sshd
//! makes each session's shell a group leader), so children die too. Older
//! servers ignore that request; for them every POSIX command's reader ends
//! with a harmless marker comment (`# orchestrate-<id>-end`, see [`marker`])
//! that shows in the shell's command line, and a second channel kills the
//! process group of whatever shell has it. A command dropped half-way (hard
//! cancellation) gets the signal too.

use std::sync::Arc;
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::transport::{Command, Execution, ExitStatus, OutputCollector, OutputSink, Stream, sudo};

/// How long the signal gets before the marker fallback, and the fallback before giving up.
const SIGNAL_GRACE: Duration = Duration::from_millis(1500);
const FALLBACK_GRACE: Duration = Duration::from_secs(3);

/// What a channel delivered before it closed (each stream's head and tail).
#[derive(Default)]
pub struct Drained {
    pub output: OutputCollector,
    pub status: Option<ExitStatus>,
    /// The server answered the exec request with a failure.
    pub refused: bool,
    /// A `become` command ended before its shell started: why.
    pub become_failed: Option<String>,
}

/// A `become` command's conversation with sudo, while it lasts: standard
/// error goes to the handshake, and what it says goes to the feeder.
pub struct Gate {
    pub handshake: sudo::Handshake,
    pub events: mpsc::UnboundedSender<sudo::Next>,
}

/// Reads a channel to its end, forwarding output to the sink as it comes.
pub async fn drain(
    mut read: ChannelReadHalf,
    sink: Option<OutputSink>,
    mut gate: Option<Gate>,
) -> Drained {
    let mut out = Drained {
        output: OutputCollector::new(sink),
        ..Drained::default()
    };
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                out.output.push(Stream::Stdout, &data, false);
                out.output.forward(Stream::Stdout, data);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let data = match gate.as_mut().map(|g| (g.handshake.feed(&data), g)) {
                    None => data,
                    Some((sudo::Next::Started { rest }, g)) => {
                        let _ = g.events.send(sudo::Next::Started { rest: Vec::new() });
                        gate = None;
                        Bytes::from(rest)
                    }
                    Some((next, g)) => {
                        let _ = g.events.send(next);
                        continue;
                    }
                };
                if !data.is_empty() {
                    out.output.push(Stream::Stderr, &data, false);
                    out.output.forward(Stream::Stderr, data);
                }
            }
            ChannelMsg::ExitStatus { exit_status } => {
                out.status = Some(ExitStatus::Code(exit_status as i32))
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                out.status = Some(ExitStatus::Signal(signal_label(&signal_name)))
            }
            ChannelMsg::Failure if out.status.is_none() => out.refused = true,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Some(gate) = gate {
        out.become_failed = Some(gate.handshake.ended(out.status.as_ref()));
    }
    out
}

/// `KILL`, `TERM`, ... as [`ExitStatus::Signal`] names them.
pub fn signal_label(signal: &Sig) -> String {
    let text = format!("{signal:?}");
    match text.strip_prefix("Custom(\"") {
        Some(rest) => rest.trim_end_matches("\")").to_string(),
        None => text,
    }
}

/// The kill marker of a command: unique per controller process and
/// command, and ending in `-end` so that `...-1-end` never matches the
/// marker of command 10 or 11. It stands on the command line of the shell
/// that runs the script (see `transport::wrapper`), so a new connection can
/// find and kill what an old one left running.
pub fn marker(pid: u32, command: u64) -> String {
    format!("orchestrate-{pid}-{command}-end")
}

/// The number of the next command of this controller process, for its
/// [`marker`]: counted over all sessions, so no two commands share one.
pub fn next_command() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `o[r]chestrate-...`: matches the marker but not a command line holding
/// this pattern itself.
fn pattern(token: &str) -> String {
    let mut chars = token.chars();
    let first = chars.next().unwrap_or('o');
    let second = chars.next().unwrap_or('r');
    let rest: String = chars.collect();
    format!("{first}[{second}]{rest}")
}

/// Shell that sets `$pids` to the shells marked `token`: found with
/// `pgrep -f`, or from `/proc` where procps is missing.
fn find_marked(token: &str) -> String {
    let pattern = pattern(token);
    format!(
        "pids=$(pgrep -f '{pattern}' 2>/dev/null) || pids=$(for d in /proc/[0-9]*; do \
         case \"$(tr '\\000' ' ' 2>/dev/null < \"$d/cmdline\")\" in *{pattern}*) echo \"${{d#/proc/}}\";; esac; \
         done 2>/dev/null)"
    )
}

/// Shell that kills each of `$pids` and its process group. The group is
/// looked up, not taken to be the shell's pid: under sudo the marked shell
/// is not a group leader, and its group (sudo's, the SSH session's) is what
/// must go. (`kill -KILL -PGID`: dash's `kill` takes no `--`.)
const KILL_PIDS_AND_GROUPS: &str = "for p in $pids; do \
     g=$(ps -o pgid= -p \"$p\" 2>/dev/null | tr -d ' '); [ -n \"$g\" ] || g=$(cut -d' ' -f5 \"/proc/$p/stat\" 2>/dev/null); \
     [ -n \"$g\" ] && [ \"$g\" -gt 1 ] && kill -KILL -$g 2>/dev/null; kill -KILL $p; done 2>/dev/null";

/// A shell command that kills the process group of the shell marked
/// `token`: found with `pgrep -f`, or from `/proc` where procps is missing.
pub fn kill_marked(token: &str) -> String {
    format!("{}; {KILL_PIDS_AND_GROUPS}; true", find_marked(token))
}

/// A shell command that kills the process groups of the shells marked
/// `tokens` and exits 0 only once none of them is left (for about 3 s;
/// then it names what is still running and exits 1).
pub fn kill_marked_and_check(tokens: &[String]) -> String {
    let mut script = String::from("left=\ni=0\nwhile [ $i -lt 30 ]; do\n  left=\n");
    for token in tokens {
        script.push_str(&format!(
            "  {}\n  {KILL_PIDS_AND_GROUPS}\n  left=\"$left$pids\"\n",
            find_marked(token)
        ));
    }
    script.push_str(
        "  [ -z \"$left\" ] && exit 0\n  sleep 0.1\n  i=$((i+1))\ndone\n\
         echo \"still running after kill -KILL: pids $left\" >&2\nexit 1\n",
    );
    script
}

/// Sends `signal KILL` and closes the channel if dropped while armed, so a
/// cancelled step does not leave its command running.
struct KillOnDrop(Option<Arc<ChannelWriteHalf<Msg>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(write) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = write.signal(Sig::KILL).await;
                let _ = write.close().await;
            });
        }
    }
}

/// How a run on a channel ended, before it becomes an [`Execution`].
pub enum Ended {
    Finished(Drained),
    /// The timeout passed; the command was killed (output so far kept).
    TimedOut(Drained),
    /// The channel's reader failed (a bug, not the host).
    ReaderFailed(String),
    /// Sending the exec request failed: the connection is gone.
    SendFailed(String),
    /// sudo did not start the command (wrong password, no rights, ...): why.
    BecomeFailed(String),
}

/// Answers sudo until the become shell has started (`Ok`), or says why it
/// will not (`Err(Some(why))`; `Err(None)`: the channel ended first, and
/// the drain knows why). Never waits longer than the handshake's limits.
async fn converse(
    write: &ChannelWriteHalf<Msg>,
    mut heard: mpsc::UnboundedReceiver<sudo::Next>,
) -> Result<(), Option<String>> {
    let deadline = tokio::time::Instant::now() + sudo::HANDSHAKE_LIMIT;
    let mut stalled: Option<String> = None;
    loop {
        let wait = match &stalled {
            Some(_) => sudo::UNKNOWN_PROMPT_WAIT,
            None => deadline.saturating_duration_since(tokio::time::Instant::now()),
        };
        match tokio::time::timeout(wait, heard.recv()).await {
            Ok(Some(sudo::Next::Started { .. })) => return Ok(()),
            Ok(Some(sudo::Next::Answer(answer))) => {
                stalled = None;
                if write.data(&answer[..]).await.is_err() {
                    return Err(None);
                }
            }
            Ok(Some(sudo::Next::Wait { unknown })) => stalled = unknown.or(stalled),
            Ok(Some(sudo::Next::Failed(why))) => return Err(Some(why)),
            Ok(None) => return Err(None),
            Err(_) => {
                return Err(Some(stalled.unwrap_or_else(|| {
                    format!(
                        "sudo did not start the command within {:?}",
                        sudo::HANDSHAKE_LIMIT
                    )
                })));
            }
        }
    }
}

/// Runs `wire` on `channel`, writing `input` (the script for the reader,
/// then the command's own stdin) and closing stdin, within the command's
/// timeout. `fallback_kill` runs a shell command on a fresh channel (POSIX
/// hosts).
pub async fn run<F, Fut>(
    channel: Channel<Msg>,
    wire: String,
    input: Option<Vec<u8>>,
    command: &Command,
    sink: Option<OutputSink>,
    fallback_kill: Option<F>,
    handshake: Option<sudo::Handshake>,
) -> Ended
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (read, write) = channel.split();
    let write = Arc::new(write);
    let (events, heard) = mpsc::unbounded_channel();
    let gated = handshake.is_some();
    let gate = handshake.map(|handshake| Gate { handshake, events });
    let mut drained = tokio::spawn(drain(read, sink, gate));
    let mut guard = KillOnDrop(Some(write.clone()));
    if let Err(e) = write.exec(true, wire.into_bytes()).await {
        guard.0 = None;
        drained.abort();
        return Ended::SendFailed(e.to_string());
    }
    // A `become` command that sudo will not start: the feeder says why.
    let (refusal, mut refused) = tokio::sync::oneshot::channel::<String>();
    let feeder = {
        let write = write.clone();
        tokio::spawn(async move {
            if gated && let Err(failure) = converse(&write, heard).await {
                // sudo may be waiting for another answer: end its input too.
                let _ = write.signal(Sig::KILL).await;
                let _ = write.eof().await;
                if let Some(why) = failure {
                    let _ = refusal.send(why);
                }
                return;
            }
            if let Some(input) = input {
                let _ = write.data(&input[..]).await;
            }
            let _ = write.eof().await;
        })
    };
    let waited = async {
        tokio::select! {
            joined = &mut drained => Ok(joined),
            Ok(why) = &mut refused, if gated => Err(why),
        }
    };
    let finished = match command.timeout {
        Some(limit) => tokio::time::timeout(limit, waited).await.ok(),
        None => Some(waited.await),
    };
    feeder.abort();
    guard.0 = None;
    match finished {
        Some(Ok(Ok(out))) => {
            return match out.become_failed.clone() {
                Some(why) => Ended::BecomeFailed(why),
                None => Ended::Finished(out),
            };
        }
        Some(Ok(Err(e))) => return Ended::ReaderFailed(e.to_string()),
        Some(Err(why)) => {
            // Killed and told: give the channel a moment to end, never more.
            if tokio::time::timeout(SIGNAL_GRACE, &mut drained)
                .await
                .is_err()
            {
                drained.abort();
                let _ = tokio::time::timeout(SIGNAL_GRACE, write.close()).await;
            }
            return Ended::BecomeFailed(why);
        }
        None => {}
    }
    let _ = write.signal(Sig::KILL).await;
    let mut out = tokio::time::timeout(SIGNAL_GRACE, &mut drained).await;
    if out.is_err()
        && let Some(kill) = fallback_kill
    {
        tracing::debug!("the host ignored the KILL signal request; killing by marker");
        kill().await;
        out = tokio::time::timeout(FALLBACK_GRACE, &mut drained).await;
    }
    let _ = write.close().await;
    match out {
        Ok(Ok(out)) => Ended::TimedOut(out),
        _ => {
            drained.abort();
            tracing::warn!(
                "a timed-out command did not end after it was killed; its channel is closed"
            );
            Ended::TimedOut(Drained::default())
        }
    }
}

/// Runs `wire` to its end without stdin or timeout (for the kill fallback).
pub async fn run_quietly(channel: Channel<Msg>, wire: String, limit: Duration) {
    let (read, write) = channel.split();
    let drained = tokio::spawn(drain(read, None, None));
    if write.exec(true, wire.into_bytes()).await.is_ok() {
        let _ = write.eof().await;
        let _ = tokio::time::timeout(limit, drained).await;
    }
}

/// Turns a finished drain into an [`Execution`] (no status: `None`).
pub fn execution(out: Drained) -> Option<Execution> {
    Some(Execution::collected(out.status?, out.output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_its_killer() {
        let token = marker(12, 3);
        assert_eq!(token, "orchestrate-12-3-end");
        let kill = kill_marked(&token);
        assert!(kill.contains("pgrep -f 'o[r]chestrate-12-3-end'"), "{kill}");
        assert!(!kill.contains(&token));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_label(&Sig::TERM), "TERM");
        assert_eq!(signal_label(&Sig::Custom("XCPU".into())), "XCPU");
    }
}
