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
pub mod keyscan;
pub mod known_hosts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::client::{Handle, Msg};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, RwLock, Semaphore};

use self::connect::{Client, Dialer};
pub use self::keyscan::{KeyscanOutcome, KeyscanStatus, keyscan};
use super::{
    Command, Connector, Execution, ExitStatus, Os, OutputSink, Session, Target, TransportError,
    UploadSource,
};

/// Command channels open at once on one connection. OpenSSH's default
/// `MaxSessions` is 10; one more channel is used by SFTP, one is spare.
pub const MAX_CHANNELS: usize = 8;

/// How long a refused channel is retried before the step fails.
const CHANNEL_RETRY: Duration = Duration::from_secs(3);

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
        Ok(Box::new(SshSession {
            target: target.clone(),
            dialer: self.dialer.clone(),
            live: RwLock::new(Arc::new(Live::new(handle))),
            channels: Semaphore::new(MAX_CHANNELS),
            unique: AtomicU64::new(0),
        }))
    }
}

/// One connection and the SFTP session opened on it when first needed.
struct Live {
    handle: Handle<Client>,
    sftp: OnceCell<SftpSession>,
}

impl Live {
    fn new(handle: Handle<Client>) -> Live {
        Live {
            handle,
            sftp: OnceCell::new(),
        }
    }
}

pub struct SshSession {
    target: Target,
    dialer: Arc<Dialer>,
    live: RwLock<Arc<Live>>,
    channels: Semaphore,
    unique: AtomicU64,
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

    /// Opens a session channel. A refusal on a live connection is retried for
    /// a few seconds: sshd frees a session slot only once the previous
    /// command's process is reaped, and a host with a lower `MaxSessions`
    /// than [`MAX_CHANNELS`] frees slots as its other steps end.
    async fn open_channel(&self, live: &Live) -> Result<russh::Channel<Msg>, TransportError> {
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
            if waited >= CHANNEL_RETRY {
                return Err(TransportError::Other(format!(
                    "host {}: the host refused to open another SSH channel ({e}) for {:?}; its \
                     sshd probably allows fewer sessions per connection (MaxSessions) than the {} \
                     this tool uses at once: raise MaxSessions on the host (OpenSSH default: 10)",
                    self.host(),
                    CHANNEL_RETRY,
                    MAX_CHANNELS + 1
                )));
            }
            tokio::time::sleep(pause).await;
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn sftp<'a>(&self, live: &'a Live) -> Result<&'a SftpSession, TransportError> {
        live.sftp
            .get_or_try_init(|| async {
                let channel = self.open_channel(live).await?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|e| self.lost(e))?;
                SftpSession::new(channel.into_stream()).await.map_err(|e| {
                    TransportError::Other(format!(
                        "host {}: cannot start SFTP ({e}); check that sshd has an sftp Subsystem",
                        self.host()
                    ))
                })
            })
            .await
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
                    *self.live.write().await = Arc::new(Live::new(handle));
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
        let mut wire = command::wire(&self.target, &command.script)?;
        let posix = self.target.os.is_posix();
        let token = format!(
            "orchestrate-{}-{}",
            std::process::id(),
            self.unique.fetch_add(1, Ordering::Relaxed)
        );
        if posix && command.timeout.is_some() {
            wire = exec::with_marker(&token, &wire);
        }
        let _permit = self.channels.acquire().await.expect("never closed");
        let live = self.current().await;
        let channel = self.open_channel(&live).await?;
        let fallback = posix.then(|| {
            let live = live.clone();
            let token = token.clone();
            move || async move {
                // Outside the channel cap: this must not wait behind the steps it helps.
                if let Ok(channel) = live.handle.channel_open_session().await {
                    exec::run_quietly(channel, exec::kill_marked(&token), Duration::from_secs(5))
                        .await;
                }
            }
        });
        let out = match exec::run(channel, wire, command, sink, fallback).await {
            exec::Ended::Finished(out) => out,
            exec::Ended::TimedOut(out) => {
                return Ok(Execution::collected(ExitStatus::TimedOut, out.output));
            }
            exec::Ended::SendFailed(e) => return Err(self.lost(e)),
            exec::Ended::ReaderFailed(e) => {
                return Err(TransportError::Other(format!(
                    "host {}: reading the command's output failed: {e}",
                    self.host()
                )));
            }
        };
        if out.refused {
            return Err(TransportError::Other(format!(
                "host {}: sshd refused to run the command (exec request denied)",
                self.host()
            )));
        }
        match exec::execution(out) {
            Some(done) => Ok(done),
            None if live.handle.is_closed() => {
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
        let live = self.current().await;
        let sftp = self.sftp(&live).await?;
        let path = command::sftp_path(self.target.os, dest);
        let fail = |e: &dyn std::fmt::Display| {
            if live.handle.is_closed() {
                self.lost(format!("uploading {dest}: {e}"))
            } else {
                TransportError::Other(format!("host {}: cannot write {dest}: {e}", self.host()))
            }
        };
        let attrs = FileAttributes {
            permissions: self.target.os.is_posix().then_some(mode & 0o7777),
            ..Default::default()
        };
        let mut file = sftp
            .open_with_flags_and_attributes(
                path.clone(),
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
                attrs.clone(),
            )
            .await
            .map_err(|e| fail(&e))?;
        source.copy_to(&mut file).await.map_err(|e| fail(&e))?;
        file.shutdown().await.map_err(|e| fail(&e))?;
        if self.target.os.is_posix() {
            // The umask applied at creation; set the mode exactly.
            sftp.set_metadata(path, attrs).await.map_err(|e| fail(&e))?;
        }
        Ok(())
    }

    async fn remove(&self, path: &str) -> Result<(), TransportError> {
        let live = self.current().await;
        let sftp = self.sftp(&live).await?;
        sftp.remove_file(command::sftp_path(self.target.os, path))
            .await
            .map_err(|e| {
                TransportError::Other(format!("host {}: cannot remove {path}: {e}", self.host()))
            })
    }

    fn temp_path(&self, name: &str) -> String {
        // Not guessable by other users of a shared /tmp: std's RandomState is
        // seeded from the OS's random source.
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.unique.fetch_add(1, Ordering::Relaxed));
        let unique = format!("{}-{:016x}", std::process::id(), hasher.finish());
        command::temp_path(self.target.os, &unique, name)
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
        let channel = self.open_channel(&live).await?;
        // The connection is about to go: wait for the command only a little.
        // It runs in a task of its own, never killed: it ends with the connection.
        let running = {
            let reboot = reboot.clone();
            tokio::spawn(async move {
                let command = Command::new(super::Script::Sh(reboot.clone()));
                let no_kill: Option<fn() -> std::future::Ready<()>> = None;
                exec::run(channel, reboot, &command, None, no_kill).await
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
        if let Some(sftp) = live.sftp.get() {
            let _ = sftp.close().await;
        }
        let _ = live
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
