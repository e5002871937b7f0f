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
//! servers ignore that request; for them the command carries a harmless
//! marker line (`: orchestrate-<id>`) that shows in the shell's command line,
//! and a second channel kills the process group of whatever shell has it.
//! A command dropped half-way (hard cancellation) gets the signal too.

use std::sync::Arc;
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use crate::transport::{Command, Execution, ExitStatus, OutputCollector, OutputSink, Stream};

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
}

/// Reads a channel to its end, forwarding output to the sink as it comes.
pub async fn drain(mut read: ChannelReadHalf, sink: Option<OutputSink>) -> Drained {
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
                out.output.push(Stream::Stderr, &data, false);
                out.output.forward(Stream::Stderr, data);
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

/// The marker line put in front of a POSIX command that has a timeout.
pub fn with_marker(token: &str, wire: &str) -> String {
    format!(": {token}\n{wire}")
}

/// A shell command that kills the process group of the shell marked `token`:
/// found with `pgrep -f`, or from `/proc` where procps is missing. The
/// pattern `o[r]chestrate-...` matches the marker but not this command itself.
/// (`kill -KILL -PGID`: dash's `kill` takes no `--`.)
pub fn kill_marked(token: &str) -> String {
    let mut chars = token.chars();
    let first = chars.next().unwrap_or('o');
    let second = chars.next().unwrap_or('r');
    let rest: String = chars.collect();
    let pattern = format!("{first}[{second}]{rest}");
    format!(
        "pids=$(pgrep -f '{pattern}' 2>/dev/null) || pids=$(for d in /proc/[0-9]*; do \
         case \"$(tr '\\000' ' ' 2>/dev/null < \"$d/cmdline\")\" in *{pattern}*) echo \"${{d#/proc/}}\";; esac; \
         done 2>/dev/null); for p in $pids; do kill -KILL -$p $p; done 2>/dev/null; true"
    )
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
}

/// Runs `wire` on `channel` with the command's stdin and timeout.
/// `fallback_kill` runs a shell command on a fresh channel (POSIX hosts).
pub async fn run<F, Fut>(
    channel: Channel<Msg>,
    wire: String,
    command: &Command,
    sink: Option<OutputSink>,
    fallback_kill: Option<F>,
) -> Ended
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (read, write) = channel.split();
    let write = Arc::new(write);
    let mut drained = tokio::spawn(drain(read, sink));
    let mut guard = KillOnDrop(Some(write.clone()));
    if let Err(e) = write.exec(true, wire.into_bytes()).await {
        guard.0 = None;
        drained.abort();
        return Ended::SendFailed(e.to_string());
    }
    let feeder = {
        let write = write.clone();
        let input = command.stdin.clone();
        tokio::spawn(async move {
            if let Some(input) = input {
                let _ = write.data(&input[..]).await;
            }
            let _ = write.eof().await;
        })
    };
    let finished = match command.timeout {
        Some(limit) => tokio::time::timeout(limit, &mut drained).await.ok(),
        None => Some((&mut drained).await),
    };
    feeder.abort();
    guard.0 = None;
    if let Some(joined) = finished {
        return match joined {
            Ok(out) => Ended::Finished(out),
            Err(e) => Ended::ReaderFailed(e.to_string()),
        };
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
    let drained = tokio::spawn(drain(read, None));
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
        let token = "orchestrate-12-3";
        assert_eq!(with_marker(token, "sleep 9"), ": orchestrate-12-3\nsleep 9");
        let kill = kill_marked(token);
        assert!(kill.contains("pgrep -f 'o[r]chestrate-12-3'"), "{kill}");
        assert!(!kill.contains(token));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_label(&Sig::TERM), "TERM");
        assert_eq!(signal_label(&Sig::Custom("XCPU".into())), "XCPU");
    }
}
