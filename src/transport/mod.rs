//! Where a command crosses the wire.
//!
//! A transport knows how to reach one host and run things there; it knows
//! nothing of playbooks, phases, waves or rollback. The runner hands it a
//! [`Target`] (who to reach and how) and then, over one [`Session`], a series
//! of [`Command`]s, uploads and reboots. Keeping this seam narrow is what lets
//! `local`, `ssh` and `winrm` be swapped under the same runner, and lets the
//! scheduler be tested with a scripted transport.
//!
//! Timeouts live here, not in the runner: only the transport can kill what a
//! timed-out command left running on the far side (a remote process group, a
//! WinRM shell), so [`Command::timeout`] is enforced by the session and
//! reported as [`ExitStatus::TimedOut`]. Hard cancellation (a second Ctrl-C)
//! is the runner dropping the future; sessions must clean up on drop.

pub mod atomic_upload;
pub mod local;
pub mod output;
pub mod script_args;
pub mod ssh;
pub mod sudo;
pub mod upload;
pub mod winrm;
pub mod wrapper;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::output::{BoundedOutput, OutputBuffer, OutputChunk, OutputCollector, OutputSink};
pub use self::upload::UploadSource;

/// The operating system family of a host, as far as a transport cares:
/// it decides which shell `run` means and how PowerShell is sent.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Windows,
    Linux,
    Macos,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Windows => "windows",
            Os::Linux => "linux",
            Os::Macos => "macos",
        }
    }

    pub fn is_posix(self) -> bool {
        !matches!(self, Os::Windows)
    }
}

impl std::fmt::Display for Os {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which transport reaches a host.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Ssh,
    Winrm,
    Local,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Ssh => "ssh",
            TransportKind::Winrm => "winrm",
            TransportKind::Local => "local",
        }
    }
}

/// A secret value. Its `Debug` never shows the value, so a secret that ends
/// up in a `{:?}` (a log line, a panic message) is still not disclosed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: call only where it is handed to the far side.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// SSH settings of one host, resolved from inventory defaults, client and
/// host (paths already expanded, secrets already read).
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    /// Private key file; `None` means: try the ssh-agent, then the password.
    pub identity_file: Option<PathBuf>,
    /// Passphrase of `identity_file`, if it is encrypted.
    pub identity_passphrase: Option<Secret>,
    /// Password authentication, if the inventory names a password secret.
    pub password: Option<Secret>,
    /// OpenSSH `known_hosts` file to verify (and with `accept-new`, record) keys.
    pub known_hosts: Option<PathBuf>,
    /// A key pinned in the inventory (`ssh-ed25519 AAAA...`), checked before known_hosts.
    pub host_key: Option<String>,
    /// Jump host as `user@host:port` (user and port optional).
    pub jump_host: Option<String>,
}

/// WinRM settings of one host.
#[derive(Debug, Clone)]
pub struct WinrmSettings {
    pub port: u16,
    pub tls: bool,
    pub auth: WinrmAuth,
    pub password: Option<Secret>,
    /// CA bundle (PEM) to verify the endpoint's certificate instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Certificate verification off: needs an explicit inventory option and warns.
    pub insecure_skip_verify: bool,
}

impl Default for WinrmSettings {
    fn default() -> Self {
        WinrmSettings {
            port: 5986,
            tls: true,
            auth: WinrmAuth::Ntlm,
            password: None,
            ca_file: None,
            insecure_skip_verify: false,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WinrmAuth {
    Basic,
    Ntlm,
}

/// How host keys are checked (`--host-key-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Unknown or changed keys refuse the host.
    #[default]
    Strict,
    /// Unknown keys are recorded in known_hosts; changed keys refuse the host.
    AcceptNew,
    /// No check at all (warned about by the command line).
    Off,
}

/// Which tool `become` uses on a POSIX host. Only sudo today; doas, su
/// and run0 would be further variants.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BecomeMethod {
    #[default]
    Sudo,
}

/// How a step marked `become` runs as another user (inventory `become:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub method: BecomeMethod,
    /// The user steps run as (default `root`).
    pub user: String,
    /// The login user's password for sudo; `None`: a NOPASSWD rule.
    pub password: Option<Secret>,
}

impl Default for Become {
    fn default() -> Self {
        Become {
            method: BecomeMethod::Sudo,
            user: "root".into(),
            password: None,
        }
    }
}

/// Everything a transport needs to reach one host.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name, used in every error message.
    pub name: String,
    pub address: String,
    /// `None`: the transport's default port (22, or the WinRM settings' port).
    pub port: Option<u16>,
    pub os: Os,
    pub user: Option<String>,
    pub kind: TransportKind,
    pub ssh: SshSettings,
    pub winrm: WinrmSettings,
    pub host_key_policy: HostKeyPolicy,
    /// How long connecting (TCP, handshake, authentication) may take.
    pub connect_timeout: Duration,
    /// How to restart this host, if not the OS default (`shutdown -r now`,
    /// `Restart-Computer -Force`). Inventory `reboot_command`; tests use it to
    /// "reboot" a host by restarting its server.
    pub reboot_command: Option<String>,
    /// How `become` steps run as another user on this host.
    pub r#become: Become,
}

/// What to run. The transport turns it into what the host's shell needs;
/// the text itself never goes on a command line (see [`wrapper`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Script {
    /// The host's default shell: `sh` on Linux and macOS, PowerShell on Windows.
    Default(String),
    Sh(String),
    PowerShell(String),
    Cmd(String),
}

impl Script {
    pub fn text(&self) -> &str {
        match self {
            Script::Default(s) | Script::Sh(s) | Script::PowerShell(s) | Script::Cmd(s) => s,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Command {
    pub script: Script,
    /// Bytes written to the command's standard input, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Kill the command after this long and report [`ExitStatus::TimedOut`].
    pub timeout: Option<Duration>,
    /// Run as the target's [`Become`] user (POSIX hosts).
    pub r#become: bool,
}

impl Command {
    pub fn new(script: Script) -> Self {
        Command {
            script,
            stdin: None,
            timeout: None,
            r#become: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by a signal (POSIX), e.g. `"KILL"`.
    Signal(String),
    /// [`Command::timeout`] passed; the command was killed.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub status: ExitStatus,
    /// Each stream's head and tail (see [`output`]): bounded, whatever the host sent.
    pub stdout: BoundedOutput,
    pub stderr: BoundedOutput,
}

impl Execution {
    /// A finished command's status and what the collector kept.
    pub fn collected(status: ExitStatus, output: OutputCollector) -> Execution {
        Execution {
            status,
            stdout: output.stdout.finish(),
            stderr: output.stderr.finish(),
        }
    }
}

/// Why a transport could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not reach or log in to the host: the host is `unreachable`.
    #[error("{0}")]
    Unreachable(String),
    /// The host key did not match, or is unknown under the strict policy.
    #[error("{0}")]
    HostKey(String),
    /// The connection broke while a command ran: the command's outcome is unknown.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The transport cannot do this (e.g. `reboot` on `local`).
    #[error("{0}")]
    Unsupported(String),
    /// Anything else, with a message for the operator.
    #[error("{0}")]
    Other(String),
}

/// Opens sessions to hosts. One connector serves a whole run, so it can share
/// what hosts have in common (a decrypted key, a jump connection).
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, target: &Target) -> Result<Box<dyn Session>, TransportError>;
}

/// One open connection to one host, reused for all of its steps.
#[async_trait]
pub trait Session: Send + Sync {
    /// Run a command to its end (or its timeout), streaming output into `sink`.
    async fn execute(
        &self,
        command: &Command,
        sink: Option<OutputSink>,
    ) -> Result<Execution, TransportError>;

    /// Write the file `source` names to `dest` on the host, with POSIX `mode`
    /// where it applies, read from disk in chunks (never whole in memory).
    async fn upload(
        &self,
        source: &UploadSource,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError>;

    /// Remove a file on the host (for `script` steps' temporary copies).
    async fn remove(&self, path: &str) -> Result<(), TransportError>;

    /// A temporary path on the host for an uploaded script named `name`.
    fn temp_path(&self, name: &str) -> String;

    /// Restart the host, wait for it to go and come back within `timeout`,
    /// and reconnect (verifying the host key again).
    async fn reboot(&self, timeout: Duration) -> Result<(), TransportError>;

    /// Close the connection politely.
    async fn close(&self);

    /// What this session may have left behind on the host when its
    /// connection broke: commands whose end it never saw (sshd does not
    /// kill a command when its connection drops) and temporary files of
    /// uploads cut short. Hand them to [`Session::clean_up`] of a fresh
    /// session before rolling back.
    fn leftovers(&self) -> Leftovers {
        Leftovers::default()
    }

    /// Kills the commands and removes the files `leftovers` names (left by
    /// a lost session to the same host), and makes sure no such command is
    /// still running. `Err`: that could not be shown; a person must check.
    async fn clean_up(&self, leftovers: &Leftovers) -> Result<(), TransportError> {
        if leftovers.is_empty() {
            return Ok(());
        }
        Err(TransportError::Unsupported(
            "this transport cannot find what a lost connection left running".into(),
        ))
    }
}

/// What a session that lost its connection may have left on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Markers of commands whose end was not seen (see `ssh::exec`).
    pub commands: Vec<String>,
    /// Those of [`Leftovers::commands`] that ran as the become user: only
    /// that user (through sudo again) can kill them.
    pub r#become: Vec<String>,
    /// Commands whose end was not seen that carry no marker to find them by.
    pub unmarked: usize,
    /// Temporary files of uploads that did not finish.
    pub files: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.unmarked == 0 && self.files.is_empty()
    }
}

/// `PROGRAM -NoProfile -NonInteractive -EncodedCommand <base64 of UTF-16LE>`:
/// how PowerShell is sent whatever shell receives it (cmd.exe, a WinRM
/// shell), with no quoting to get wrong. It puts `text` on the endpoint's
/// command line: for fixed, secret-free text only (the WinRM transport's
/// own helpers and, for now, its steps: see its module).
pub fn encoded_powershell(program: &str, text: &str) -> String {
    use base64::Engine as _;
    let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    format!(
        "{program} -NoProfile -NonInteractive -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
}

/// A temporary path for `name` on a host: `/tmp/orchestrate-UNIQUE-NAME` or
/// `C:\Windows\Temp\orchestrate-UNIQUE-NAME`, the name reduced to safe
/// characters. `unique` must be unguessable (see [`unguessable`]): another
/// user of a shared `/tmp` who could predict the name could plant a symlink
/// there first.
pub fn temp_path(os: Os, unique: &str, name: &str) -> String {
    format!("{}{unique}-{}", temp_prefix(os), temp_name(name))
}

/// What every [`temp_path`] on a host of `os` begins with.
pub fn temp_prefix(os: Os) -> &'static str {
    match os {
        Os::Windows => "C:\\Windows\\Temp\\orchestrate-",
        _ => "/tmp/orchestrate-",
    }
}

/// `name` reduced to the characters a [`temp_path`] keeps.
pub fn temp_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 122 random bits (a v4 UUID, from the OS's random source) as 32 hex digits.
pub fn unguessable() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A target for unit tests.
#[cfg(test)]
pub(crate) fn test_target(os: Os) -> Target {
    Target {
        name: "h".into(),
        address: "10.0.0.1".into(),
        port: None,
        os,
        user: None,
        kind: TransportKind::Ssh,
        ssh: Default::default(),
        winrm: Default::default(),
        host_key_policy: Default::default(),
        connect_timeout: std::time::Duration::from_secs(5),
        reboot_command: None,
        r#become: Default::default(),
    }
}

/// Picks the connector for each host's transport kind.
#[derive(Clone, Default)]
pub struct Connectors {
    pub local: Option<Arc<dyn Connector>>,
    pub ssh: Option<Arc<dyn Connector>>,
    pub winrm: Option<Arc<dyn Connector>>,
}

impl Connectors {
    pub fn for_kind(&self, kind: TransportKind) -> Result<Arc<dyn Connector>, TransportError> {
        let found = match kind {
            TransportKind::Local => self.local.clone(),
            TransportKind::Ssh => self.ssh.clone(),
            TransportKind::Winrm => self.winrm.clone(),
        };
        found.ok_or_else(|| {
            TransportError::Unsupported(format!(
                "the {} transport is not available in this build",
                kind.as_str()
            ))
        })
    }
}
