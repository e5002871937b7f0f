//! The `ssh` transport: OpenSSH endpoints (Linux, macOS, Windows), directly
//! or through a jump host, over russh.
//!
//! One connection per host carries all of its steps; each step gets its own
//! channel, and each channel is drained by its own task, because russh stalls
//! the whole connection when one channel's messages are not read. Channels
//! per connection are capped below OpenSSH's default `MaxSessions 10`
//! (one more is kept for SFTP), so a busy host makes steps wait rather than
//! fail.
//!
//! The connection sits behind a lock so that [`Session::reboot`] can swap in
//! a fresh one and the session goes on as if nothing happened. A step timeout
//! sends the `signal KILL` channel request: OpenSSH (7.9+) answers it with
//! `killpg` on the session's process group, so children (a `sleep`, an
//! installer) die with the shell, not only the shell; older servers get a
//! second channel that kills the group (see [`exec`]).

pub mod auth;
pub mod command;
pub mod connect;
pub mod exec;
mod files;
pub mod keyscan;
pub mod known_hosts;
pub mod retry;
mod spare;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::client::{Handle, Msg};
use tokio::sync::{RwLock, Semaphore};

use self::connect::{Client, Dialer};
pub use self::keyscan::{KeyscanOutcome, KeyscanStatus, keyscan};
use super::{
    Command, Connector, Execution, ExitStatus, Leftovers, Os, OutputSink, Script, Session, Target,
    TransportError, UploadSource, sudo, wrapper,
};

/// Command channels open at once on one connection. OpenSSH's default
/// `MaxSessions` is 10; one more channel is used by SFTP, one is spare.
pub const MAX_CHANNELS: usize = 8;

/// How long a refused channel is waited for (retried with backoff) before
/// the step fails, unless the step's own timeout is shorter.
const CHANNEL_WAIT: Duration = Duration::from_secs(20);

/// How long finding and killing what a lost connection left running may take.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(20);

/// Opens [`SshSession`]s. One connector serves a whole run: it keeps the
/// decrypted keys and the jump host connections that hosts share.
#[derive(Clone)]
pub struct SshConnector {
    dialer: Arc<Dialer>,
}

impl Default for SshConnector {
    fn default() -> Self {
        SshConnector::new()
    }
}

impl SshConnector {
    /// A connector using the ssh-agent named by `SSH_AUTH_SOCK`, if any.
    pub fn new() -> Self {
        let agent = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from);
        SshConnector::with_agent(agent)
    }

    /// A connector using the ssh-agent at `socket` (`None`: no agent).
    pub fn with_agent(socket: Option<std::path::PathBuf>) -> Self {
        SshConnector {
            dialer: Arc::new(Dialer {
                agent: socket,
                ..Dialer::default()
            }),
        }
    }

    /// Sets how a silent host is detected (default: every 15 s, lost after
    /// 3 unanswered keepalives). Call before the first connection.
    pub fn with_keepalive(self, interval: Duration, max: usize) -> Self {
        let dialer = Dialer {
            agent: self.dialer.agent.clone(),
            keepalive: connect::Keepalive { interval, max },
            ..Dialer::default()
        };
        SshConnector {
            dialer: Arc::new(dialer),
        }
    }

    /// [`keyscan`] with this connector's keys and jump connections.
    pub async fn keyscan(&self, targets: &[Target], parallel: usize) -> Vec<KeyscanOutcome> {
        keyscan::scan(self.dialer.clone(), targets, parallel).await
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(&self, target: &Target) -> Result<Box<dyn Session>, TransportError> {
        let handle = self.dialer.open(target).await?;
        let live = Arc::new(Live { handle });
        // The first step's channel opens while the runner gets to it.
        let spare = spare::Spare::default();
        spare.prepare(&live);
        Ok(Box::new(SshSession {
            target: target.clone(),
            dialer: self.dialer.clone(),
            live: RwLock::new(live),
            channels: Semaphore::new(MAX_CHANNELS),
            spare,
            fresh_temp: Default::default(),
            in_flight: Mutex::new(Vec::new()),
            in_flight_become: Mutex::new(Vec::new()),
            partial_uploads: Mutex::new(Vec::new()),
        }))
    }
}

/// One connection. SFTP sessions are opened on it per upload and closed
/// right after: an SFTP channel left open holds one of sshd's
/// `MaxSessions`, and under `MaxSessions 1` every later step (and the
/// whole rollback) would be refused.
struct Live {
    handle: Handle<Client>,
}

pub struct SshSession {
    target: Target,
    dialer: Arc<Dialer>,
    live: RwLock<Arc<Live>>,
    channels: Semaphore,
    /// The channel of the next step, opened while this one runs.
    spare: spare::Spare,
    /// Paths handed out by [`Session::temp_path`] and not yet written: the
    /// first upload to one creates it exclusively (SFTP `EXCL`), so a file
    /// or symlink someone put there first is refused, never followed.
    fresh_temp: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Markers of commands started and not seen to end.
    in_flight: Mutex<Vec<String>>,
    /// Those of them run as the become user.
    in_flight_become: Mutex<Vec<String>>,
    /// Temporary copies of uploads not yet renamed into place.
    partial_uploads: Mutex<Vec<String>>,
}

/// Adds or removes `item` in a list behind a lock.
fn note(list: &Mutex<Vec<String>>, item: &str, present: bool) {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|i| i != item);
    if present {
        list.push(item.to_string());
    }
}

impl SshSession {
    fn host(&self) -> &str {
        &self.target.name
    }

    fn lost(&self, e: impl std::fmt::Display) -> TransportError {
        TransportError::ConnectionLost(format!(
            "host {}: {e}; the step's outcome on the host is unknown",
            self.host()
        ))
    }

    async fn current(&self) -> Arc<Live> {
        self.live.read().await.clone()
    }

    /// Opens a session channel. A refusal on a live connection ("administratively
    /// prohibited", resource shortage) is retried with backoff for up to
    /// `wait`: sshd frees a session slot only once the previous command's
    /// process is reaped, and a host with a lower `MaxSessions` than
    /// [`MAX_CHANNELS`] frees slots as its other steps end.
    async fn open_channel(
        &self,
        live: &Live,
        wait: Duration,
    ) -> Result<russh::Channel<Msg>, TransportError> {
        let mut pause = Duration::from_millis(25);
        let mut waited = Duration::ZERO;
        loop {
            if live.handle.is_closed() {
                return Err(self.lost("the SSH connection is closed"));
            }
            let e = match live.handle.channel_open_session().await {
                Ok(channel) => return Ok(channel),
                Err(e) => e,
            };
            if live.handle.is_closed() {
                return Err(self.lost(format!("the SSH connection broke: {e}")));
            }
            // A channel opened ahead for the next step may hold the place.
            self.spare.release().await;
            if waited >= wait {
                return Err(TransportError::Other(format!(
                    "host {}: the host refused to open another SSH channel ({e}) for {:?}; its \
                     sshd probably allows fewer sessions per connection (MaxSessions) than the {} \
                     this tool uses at once: raise MaxSessions on the host (OpenSSH default: 10)",
                    self.host(),
                    wait,
                    MAX_CHANNELS + 1
                )));
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The sudo conversation for a `become` command: `sh` scripts on
    /// POSIX hosts only.
    fn become_handshake(&self, script: &super::Script) -> Result<sudo::Handshake, TransportError> {
        use super::Script;
        if !self.target.os.is_posix() {
            return Err(TransportError::Unsupported(format!(
                "host {}: `become` works on Linux and macOS hosts only; log in as an administrator",
                self.host()
            )));
        }
        if !matches!(script, Script::Sh(_) | Script::Default(_)) {
            return Err(TransportError::Unsupported(format!(
                "host {}: `become` runs `sh`, `run`, `script` and `upload` steps; run PowerShell \
                 as root with `sudo pwsh` in an `sh` step instead",
                self.host()
            )));
        }
        Ok(sudo::Handshake::new(&self.target))
    }

    /// Whether the connection is gone, or goes within a moment: a channel
    /// can fail a little before its connection is seen closed.
    async fn broke(&self, live: &Live) -> bool {
        for _ in 0..10 {
            if live.handle.is_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        live.handle.is_closed()
    }

    /// Kills the commands marked `markers` (as the become user if
    /// `r#become`) and checks that none is left: by process group on POSIX
    /// hosts, by pid file and command line with every child on Windows
    /// (see `wrapper::powershell_kill_marked_and_check`).
    async fn kill_leftovers(
        &self,
        markers: &[String],
        r#become: bool,
    ) -> Result<(), TransportError> {
        let script = match self.target.os {
            Os::Windows => Script::PowerShell(wrapper::powershell_kill_marked_and_check(markers)),
            _ => Script::Sh(exec::kill_marked_and_check(markers)),
        };
        let mut kill = Command::new(script);
        kill.timeout = Some(CLEAN_UP_LIMIT);
        kill.r#become = r#become;
        let done = self.execute(&kill, None).await?;
        match done.status {
            ExitStatus::Code(0) => Ok(()),
            other => Err(TransportError::Other(format!(
                "host {}: the command the lost connection left running{} could not be shown \
                 killed ({other:?}): {}",
                self.host(),
                if r#become { " as the become user" } else { "" },
                String::from_utf8_lossy(&done.stderr).trim()
            ))),
        }
    }

    /// Waits until the old connection is gone, then reconnects, within `timeout`.
    async fn come_back(&self, old: &Live, timeout: Duration) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        let name = self.host().to_string();
        while !old.handle.is_closed() {
            if Instant::now() >= deadline {
                return Err(TransportError::Unreachable(format!(
                    "host {name}: the reboot was issued but the host did not go down within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut last = String::from("no attempt finished");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::Unreachable(format!(
                    "host {name}: did not come back within {timeout:?} after the reboot (last attempt: {last})"
                )));
            }
            let mut target = self.target.clone();
            target.connect_timeout = target.connect_timeout.min(left);
            match self.dialer.open(&target).await {
                Ok(handle) => {
                    *self.live.write().await = Arc::new(Live { handle });
                    // Nothing the host ran before its reboot still runs.
                    for list in [&self.in_flight, &self.in_flight_become] {
                        list.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    }
                    return Ok(());
                }
                // A different key after a reboot is a reinstalled (or spoofed) host: stop.
                Err(TransportError::HostKey(message)) => {
                    return Err(TransportError::HostKey(message));
                }
                Err(e) => last = e.to_string(),
            }
            let pause =
                Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }
}

#[async_trait]
impl Session for SshSession {
    async fn execute(
        &self,
        command: &Command,
        sink: Option<OutputSink>,
    ) -> Result<Execution, TransportError> {
        // Unique in this controller process, not only on this session:
        // the markers of two hosts on one machine must never match.
        let token = exec::marker(std::process::id(), exec::next_command());
        let mut wire = command::wire(&self.target, command, &token)?;
        let posix = self.target.os.is_posix();
        let handshake = if command.r#become {
            let handshake = self.become_handshake(&command.script)?;
            wire.line = handshake.line(&wrapper::posix_reader(&token));
            Some(handshake)
        } else {
            None
        };
        let input = Some(wire.input);
        let _permit = self.channels.acquire().await.expect("never closed");
        let live = self.current().await;
        let wait = command.timeout.unwrap_or(CHANNEL_WAIT).min(CHANNEL_WAIT);
        let channel = match self.spare.take(&live).await {
            Some(channel) => channel,
            None => self.open_channel(&live, wait).await?,
        };
        // The next step's channel opens while this one runs (see `spare`).
        self.spare.prepare(&live);
        // Until its end is seen, the command may be running on the host.
        note(&self.in_flight, &token, true);
        if command.r#become {
            note(&self.in_flight_become, &token, true);
        }
        let ended = || {
            note(&self.in_flight, &token, false);
            note(&self.in_flight_become, &token, false);
        };
        let fallback = posix.then(|| {
            let live = live.clone();
            let token = token.clone();
            let killer = command
                .r#become
                .then(|| self.become_handshake(&command.script));
            move || async move {
                // Outside the channel cap: this must not wait behind the steps it helps.
                let Ok(channel) = live.handle.channel_open_session().await else {
                    return;
                };
                let kill = exec::kill_marked(&token);
                match killer {
                    // What runs as the become user is killed as that user.
                    Some(Ok(handshake)) => {
                        let mut command = Command::new(super::Script::Sh(kill.clone()));
                        command.timeout = Some(Duration::from_secs(5));
                        let line = handshake.line(&wrapper::posix_reader("orchestrate-killer"));
                        let input = Some(wrapper::payload(&kill, None));
                        let no_kill: Option<fn() -> std::future::Ready<()>> = None;
                        exec::run(
                            channel,
                            line,
                            input,
                            &command,
                            None,
                            no_kill,
                            Some(handshake),
                        )
                        .await;
                    }
                    _ => exec::run_quietly(channel, kill, Duration::from_secs(5)).await,
                }
            }
        });
        let out = match exec::run(
            channel, wire.line, input, command, sink, fallback, handshake,
        )
        .await
        {
            exec::Ended::Finished(out) => out,
            exec::Ended::TimedOut(out) => {
                ended();
                return Ok(Execution::collected(ExitStatus::TimedOut, out.output));
            }
            exec::Ended::SendFailed(e) => return Err(self.lost(e)),
            exec::Ended::BecomeFailed(why) => return Err(TransportError::Other(why)),
            exec::Ended::ReaderFailed(e) => {
                return Err(TransportError::Other(format!(
                    "host {}: reading the command's output failed: {e}",
                    self.host()
                )));
            }
        };
        if out.refused {
            ended();
            return Err(TransportError::Other(format!(
                "host {}: sshd refused to run the command (exec request denied)",
                self.host()
            )));
        }
        match exec::execution(out) {
            Some(done) => {
                ended();
                Ok(done)
            }
            None if self.broke(&live).await => {
                Err(self.lost("the SSH connection broke while the command ran"))
            }
            None => Err(self
                .lost("the channel closed without an exit status (the remote shell was killed?)")),
        }
    }

    async fn upload(
        &self,
        source: &UploadSource,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        self.upload_file(source, dest, mode).await
    }

    async fn remove(&self, path: &str) -> Result<(), TransportError> {
        self.remove_file(path).await
    }

    fn temp_path(&self, name: &str) -> String {
        let path = command::temp_path(self.target.os, &super::unguessable(), name);
        self.fresh_temp
            .lock()
            .expect("not poisoned")
            .insert(path.clone());
        path
    }

    async fn reboot(&self, timeout: Duration) -> Result<(), TransportError> {
        let reboot = self.target.reboot_command.clone().unwrap_or_else(|| {
            match self.target.os {
                Os::Windows => "shutdown /r /t 0",
                _ => "shutdown -r now",
            }
            .to_string()
        });
        let live = self.current().await;
        let channel = self.open_channel(&live, CHANNEL_WAIT).await?;
        // The connection is about to go: wait for the command only a little.
        // It runs in a task of its own, never killed: it ends with the connection.
        let running = {
            let reboot = reboot.clone();
            tokio::spawn(async move {
                let command = Command::new(super::Script::Sh(reboot.clone()));
                let no_kill: Option<fn() -> std::future::Ready<()>> = None;
                exec::run(channel, reboot, None, &command, None, no_kill, None).await
            })
        };
        let settle = Duration::from_secs(10).min(timeout);
        if let Ok(Ok(exec::Ended::Finished(out))) = tokio::time::timeout(settle, running).await
            && let Some(ExitStatus::Code(code)) = out.status
            && code != 0
            && !live.handle.is_closed()
        {
            return Err(TransportError::Other(format!(
                "host {}: the reboot command `{reboot}` failed with exit code {code}: {}",
                self.host(),
                String::from_utf8_lossy(&out.output.stderr.finish()).trim()
            )));
        }
        self.come_back(&live, timeout).await
    }

    async fn close(&self) {
        let live = self.current().await;
        let _ = live
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    fn leftovers(&self) -> Leftovers {
        let commands = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let files = self
            .partial_uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let r#become = self
            .in_flight_become
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Leftovers {
            commands,
            r#become,
            unmarked: 0,
            files,
        }
    }

    async fn clean_up(&self, leftovers: &Leftovers) -> Result<(), TransportError> {
        for file in &leftovers.files {
            // A truncated temporary copy; the destination was never touched.
            let _ = self.remove(file).await;
        }
        if leftovers.unmarked > 0 {
            return Err(TransportError::Unsupported(format!(
                "host {}: {} command(s) of the lost connection carry no marker to find them \
                 by and make sure they ended",
                self.host(),
                leftovers.unmarked
            )));
        }
        // What ran as the become user is killed as that user, through
        // sudo again; the rest as the login user.
        let (as_become, as_login): (Vec<String>, Vec<String>) = leftovers
            .commands
            .iter()
            .cloned()
            .partition(|m| leftovers.r#become.contains(m));
        for (markers, r#become) in [(as_login, false), (as_become, true)] {
            if !markers.is_empty() {
                self.kill_leftovers(&markers, r#become).await?;
            }
        }
        Ok(())
    }
}
