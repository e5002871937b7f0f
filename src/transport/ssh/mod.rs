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
//! installer) die with the shell, not only the shell.

pub mod auth;
pub mod command;
pub mod connect;
pub mod keyscan;
pub mod known_hosts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use russh::client::{Handle, Msg};
use russh::{ChannelMsg, ChannelReadHalf, Sig};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, RwLock, Semaphore};

use self::connect::{Client, Dialer};
pub use self::keyscan::{KeyscanOutcome, KeyscanStatus, keyscan};
use super::{
    Command, Connector, Execution, ExitStatus, Os, OutputChunk, OutputSink, Session, Stream,
    Target, TransportError,
};

/// Command channels open at once on one connection. OpenSSH's default
/// `MaxSessions` is 10; one more channel is used by SFTP, one is spare.
pub const MAX_CHANNELS: usize = 8;

/// How long a killed command gets to report before its channel is dropped.
const KILL_GRACE: Duration = Duration::from_secs(3);

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

/// What a channel delivered before it closed.
#[derive(Default)]
struct Drained {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<ExitStatus>,
    refused: bool,
}

/// Reads a channel to its end, forwarding output to the sink as it comes.
async fn drain(mut read: ChannelReadHalf, sink: Option<OutputSink>) -> Drained {
    let mut out = Drained::default();
    let forward = |stream, data: &Bytes| {
        if let Some(sink) = &sink {
            let _ = sink.send(OutputChunk {
                stream,
                data: data.clone(),
            });
        }
    };
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                forward(Stream::Stdout, &data);
                out.stdout.extend_from_slice(&data);
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                forward(Stream::Stderr, &data);
                out.stderr.extend_from_slice(&data);
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

fn signal_label(signal: &Sig) -> String {
    let text = format!("{signal:?}");
    match text.strip_prefix("Custom(\"") {
        Some(rest) => rest.trim_end_matches("\")").to_string(),
        None => text,
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

    async fn open_channel(&self, live: &Live) -> Result<russh::Channel<Msg>, TransportError> {
        if live.handle.is_closed() {
            return Err(self.lost("the SSH connection is closed"));
        }
        live.handle.channel_open_session().await.map_err(|e| {
            if live.handle.is_closed() {
                self.lost(format!("the SSH connection broke: {e}"))
            } else {
                TransportError::Other(format!(
                    "host {}: the host refused to open another SSH channel ({e}); its sshd \
                     probably allows fewer sessions per connection (MaxSessions) than the {} \
                     this tool uses: raise MaxSessions on the host",
                    self.host(),
                    MAX_CHANNELS + 1
                ))
            }
        })
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
        let wire = command::wire(&self.target, &command.script)?;
        let _permit = self.channels.acquire().await.expect("never closed");
        let live = self.current().await;
        let channel = self.open_channel(&live).await?;
        let (read, write) = channel.split();
        let write = Arc::new(write);
        let drained = tokio::spawn(drain(read, sink));
        write
            .exec(true, wire.into_bytes())
            .await
            .map_err(|e| self.lost(e))?;
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

        let mut drained = drained;
        let finished = match command.timeout {
            Some(limit) => tokio::time::timeout(limit, &mut drained).await.ok(),
            None => Some((&mut drained).await),
        };
        feeder.abort();
        let out = match finished {
            Some(joined) => joined.map_err(|e| {
                TransportError::Other(format!("host {}: output reader failed: {e}", self.host()))
            })?,
            None => {
                // Kill the remote process group, then give the channel a moment to report.
                let _ = write.signal(Sig::KILL).await;
                let out = match tokio::time::timeout(KILL_GRACE, &mut drained).await {
                    Ok(Ok(out)) => out,
                    _ => {
                        tracing::warn!(
                            "host {}: the timed-out command did not end after SIGKILL; closing its channel",
                            self.host()
                        );
                        let _ = write.close().await;
                        drained.abort();
                        Drained::default()
                    }
                };
                let _ = write.close().await;
                return Ok(Execution {
                    status: ExitStatus::TimedOut,
                    stdout: out.stdout,
                    stderr: out.stderr,
                });
            }
        };
        if out.refused {
            return Err(TransportError::Other(format!(
                "host {}: sshd refused to run the command (exec request denied)",
                self.host()
            )));
        }
        match out.status {
            Some(status) => Ok(Execution {
                status,
                stdout: out.stdout,
                stderr: out.stderr,
            }),
            None if live.handle.is_closed() => {
                Err(self.lost("the SSH connection broke while the command ran"))
            }
            None => Err(self
                .lost("the channel closed without an exit status (the remote shell was killed?)")),
        }
    }

    async fn upload(&self, contents: &[u8], dest: &str, mode: u32) -> Result<(), TransportError> {
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
        file.write_all(contents).await.map_err(|e| fail(&e))?;
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
        let unique = format!(
            "{}-{}",
            std::process::id(),
            self.unique.fetch_add(1, Ordering::Relaxed)
        );
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
        let (read, write) = channel.split();
        // Drained by its own task like every channel; its outcome hardly
        // matters: the connection is about to go.
        let drained = tokio::spawn(drain(read, None));
        write
            .exec(true, reboot.as_bytes().to_vec())
            .await
            .map_err(|e| self.lost(e))?;
        let _ = write.eof().await;
        let settle = Duration::from_secs(10).min(timeout);
        if let Ok(Ok(out)) = tokio::time::timeout(settle, drained).await
            && let Some(ExitStatus::Code(code)) = out.status
            && code != 0
            && !live.handle.is_closed()
        {
            return Err(TransportError::Other(format!(
                "host {}: the reboot command `{reboot}` failed with exit code {code}: {}",
                self.host(),
                String::from_utf8_lossy(&out.stderr).trim()
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
