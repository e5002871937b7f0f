//! Opening one authenticated SSH connection: TCP or a jump host's
//! direct-tcpip channel, the handshake with host key verification, login.
//!
//! russh's `client::connect` has no timeout of its own, so the whole of it
//! (TCP, handshake, authentication, and the jump connection if one is needed)
//! runs under `Target::connect_timeout`. The host key is judged inside
//! russh's `check_server_key` callback; the reason for a refusal is left in a
//! shared slot so the connector can tell the operator *why* (both
//! fingerprints) instead of russh's bare "unknown key".
//!
//! Jump connections are kept per jump host spec and shared by every host
//! behind it; a closed one is replaced on the next use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};

use super::auth::{KeyCache, authenticate, user_of};
use super::known_hosts::{self, KnownHosts, Verdict, fingerprint};
use super::retry::{self, Backoff, Failure, Tally};
use crate::transport::{HostKeyPolicy, Target, TransportError};

/// Serialises appends to known_hosts files within this process.
static KNOWN_HOSTS_WRITE: Mutex<()> = Mutex::new(());

/// How a presented key compares with what the inventory knows of the host.
#[derive(Debug, Clone)]
pub enum Comparison {
    PinnedMatch,
    PinnedMismatch {
        pinned: Box<PublicKey>,
    },
    Known,
    Unknown,
    Changed {
        known: Box<PublicKey>,
        line: usize,
    },
    Revoked {
        line: usize,
    },
    /// The pinned key or known_hosts file could not be read.
    Unreadable(String),
}

/// OpenSSH's default, `~/.ssh/known_hosts`, for targets that name no file.
fn default_known_hosts() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".ssh").join("known_hosts"))
}

/// Who the host is and what its key must be.
#[derive(Debug, Clone)]
pub struct HostKeyCheck {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub policy: HostKeyPolicy,
    pub pinned: Option<String>,
    pub known_hosts: Option<PathBuf>,
}

impl HostKeyCheck {
    pub fn for_target(target: &Target) -> HostKeyCheck {
        HostKeyCheck {
            name: target.name.clone(),
            host: target.address.clone(),
            port: target.port.unwrap_or(22),
            policy: target.host_key_policy,
            pinned: target.ssh.host_key.clone(),
            known_hosts: target.ssh.known_hosts.clone().or_else(default_known_hosts),
        }
    }

    fn known_hosts_file(&self) -> Result<Option<Arc<KnownHosts>>, String> {
        match &self.known_hosts {
            None => Ok(None),
            Some(path) => KnownHosts::load_shared(path)
                .map(Some)
                .map_err(|e| format!("cannot read known_hosts {}: {e}", path.display())),
        }
    }

    pub fn compare(&self, key: &PublicKey) -> Comparison {
        if let Some(pinned) = &self.pinned {
            return match known_hosts::parse_key(pinned) {
                Ok(p) if p.key_data() == key.key_data() => Comparison::PinnedMatch,
                Ok(p) => Comparison::PinnedMismatch {
                    pinned: Box::new(p),
                },
                Err(e) => Comparison::Unreadable(format!("the inventory's host_key: {e}")),
            };
        }
        match self.known_hosts_file() {
            Ok(None) => Comparison::Unknown,
            Ok(Some(file)) => match file.check(&self.host, self.port, key) {
                Verdict::Known { .. } => Comparison::Known,
                Verdict::Unknown => Comparison::Unknown,
                Verdict::Changed { line, known } => Comparison::Changed { known, line },
                Verdict::Revoked { line } => Comparison::Revoked { line },
            },
            Err(e) => Comparison::Unreadable(e),
        }
    }

    /// Records `key` in known_hosts (for `accept-new` and keyscan).
    pub fn record(&self, key: &PublicKey) -> Result<(), String> {
        let Some(path) = &self.known_hosts else {
            return Err("no known_hosts file is set in the inventory to record it in".into());
        };
        let _guard = KNOWN_HOSTS_WRITE.lock().unwrap_or_else(|e| e.into_inner());
        // Another connection to the same host may have recorded it meanwhile.
        if let Ok(file) = KnownHosts::load_shared(path)
            && matches!(
                file.check(&self.host, self.port, key),
                Verdict::Known { .. }
            )
        {
            return Ok(());
        }
        known_hosts::append(path, &self.host, self.port, key)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Applies the policy: `Ok` lets the connection go on, `Err` is the refusal.
    pub fn judge(&self, key: &PublicKey) -> Result<(), String> {
        if self.policy == HostKeyPolicy::Off {
            return Ok(());
        }
        let name = &self.name;
        let presented = fingerprint(key);
        let kind = key.algorithm().as_str().to_string();
        match self.compare(key) {
            Comparison::PinnedMatch | Comparison::Known => Ok(()),
            Comparison::PinnedMismatch { pinned } => Err(format!(
                "host {name}: HOST KEY MISMATCH: the inventory pins {} {} but the host presented {kind} {presented}; \
                 nothing was run there. If the host was reinstalled, update its host_key in the inventory",
                pinned.algorithm().as_str(),
                fingerprint(&pinned)
            )),
            Comparison::Changed { known, line } => Err(format!(
                "host {name}: HOST KEY CHANGED: {}:{line} holds {} {} but the host presented {kind} {presented}; \
                 nothing was run there. If the change is expected, remove the old line (ssh-keygen -R) and run `orchestrate keyscan`",
                self.known_hosts
                    .as_deref()
                    .unwrap_or_else(|| "known_hosts".as_ref())
                    .display(),
                known.algorithm().as_str(),
                fingerprint(&known)
            )),
            Comparison::Revoked { line } => Err(format!(
                "host {name}: the host key {kind} {presented} is marked @revoked in {}:{line}; nothing was run there",
                self.known_hosts
                    .as_deref()
                    .unwrap_or_else(|| "known_hosts".as_ref())
                    .display()
            )),
            Comparison::Unreadable(e) => {
                Err(format!("host {name}: cannot verify the host key: {e}"))
            }
            Comparison::Unknown => {
                match self.policy {
                    HostKeyPolicy::AcceptNew => {
                        self.record(key).map_err(|e| {
                        format!("host {name}: cannot record the new host key {kind} {presented}: {e}")
                    })?;
                        tracing::info!("host {name}: recorded new host key {kind} {presented}");
                        Ok(())
                    }
                    _ => Err(format!(
                        "host {name}: the host key {kind} {presented} is unknown (not in {}); \
                     run `orchestrate keyscan` and check the fingerprint, pin it as host_key, \
                     or use --host-key-policy accept-new",
                        self.known_hosts
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "any known_hosts file: none is set".into())
                    )),
                }
            }
        }
    }

    /// Host key algorithms to offer, those already recorded for the host first.
    pub fn preferred_keys(&self) -> Vec<Algorithm> {
        let mut recorded: Vec<Algorithm> = Vec::new();
        if let Some(pinned) = self
            .pinned
            .as_deref()
            .and_then(|p| known_hosts::parse_key(p).ok())
        {
            recorded.push(pinned.algorithm());
        } else if let Ok(Some(file)) = self.known_hosts_file() {
            recorded = file.algorithms_for(&self.host, self.port);
        }
        let same_kind = |a: &Algorithm, b: &Algorithm| match (a, b) {
            (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
            _ => a == b,
        };
        let defaults = russh::Preferred::DEFAULT.key.to_vec();
        let mut ordered: Vec<Algorithm> = defaults
            .iter()
            .filter(|d| recorded.iter().any(|r| same_kind(d, r)))
            .cloned()
            .collect();
        let rest: Vec<Algorithm> = defaults
            .into_iter()
            .filter(|d| !ordered.contains(d))
            .collect();
        ordered.extend(rest);
        ordered
    }
}

/// What the handshake saw, read back after `connect_stream` returns.
#[derive(Debug, Default)]
pub struct Seen {
    pub key: Option<PublicKey>,
    pub refusal: Option<String>,
}

/// The russh handler: judges the host key (or only captures it, for keyscan).
pub struct Client {
    check: Option<HostKeyCheck>,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            seen.refusal =
                Some("the host presented a certificate; only plain host keys are supported".into());
            return Ok(false);
        };
        seen.key = Some(key.clone());
        let Some(check) = &self.check else {
            // Capture only (keyscan): stop here, the key is all we wanted.
            return Ok(false);
        };
        match check.judge(key) {
            Ok(()) => Ok(true),
            Err(refusal) => {
                seen.refusal = Some(refusal);
                Ok(false)
            }
        }
    }
}

/// Keepalives: a host silent this long, this many times over, is lost.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    pub max: usize,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(15),
            max: 3,
        }
    }
}

pub fn config(preferred_keys: Vec<Algorithm>, keepalive: Keepalive) -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(keepalive.interval),
        keepalive_max: keepalive.max,
        nodelay: true,
        preferred: russh::Preferred {
            key: Cow::Owned(preferred_keys),
            ..Default::default()
        },
        ..Default::default()
    })
}

type JumpSlot = Arc<tokio::sync::Mutex<Option<Arc<Handle<Client>>>>>;

/// Opens connections; shared by a connector and all of its sessions.
#[derive(Default)]
pub struct Dialer {
    pub keys: KeyCache,
    /// The ssh-agent socket (`SSH_AUTH_SOCK` when the connector was made).
    pub agent: Option<PathBuf>,
    pub keepalive: Keepalive,
    pub(super) jumps: Mutex<HashMap<String, JumpSlot>>,
}

/// `user@host:port`, user and port optional.
pub fn parse_jump(spec: &str) -> Result<(Option<String>, String, u16), String> {
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, spec),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or("unbalanced [ ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => 22,
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok((user, host.to_string(), port))
}

impl Dialer {
    /// An authenticated connection to `target`, within its connect timeout.
    /// A host that turns connections away (refused, reset, closed before
    /// the handshake ends: a throttling sshd) is tried again until then.
    pub async fn open(&self, target: &Target) -> Result<Handle<Client>, TransportError> {
        let limit = target.connect_timeout;
        let tally = Tally::default();
        let result = tokio::time::timeout(limit, self.open_retrying(target, &tally)).await;
        let address = format!("{}:{}", target.address, target.port.unwrap_or(22));
        match result {
            Ok(result) => result,
            Err(_) => Err(TransportError::Unreachable(match tally.summary() {
                Some(refused) => format!(
                    "host {}: {address} {refused} within the connect timeout of {limit:?}; \
                     the endpoint may be throttling new connections (sshd MaxStartups) or restarting",
                    target.name
                ),
                None => format!(
                    "host {}: no SSH connection to {address} within the connect timeout of {limit:?}; \
                     check that the host is up and the address and port are right",
                    target.name
                ),
            })),
        }
    }

    /// [`Dialer::open_untimed`] again after a jittered pause, for as long as
    /// the host turns connections away (the caller bounds the time).
    async fn open_retrying(
        &self,
        target: &Target,
        tally: &Tally,
    ) -> Result<Handle<Client>, TransportError> {
        let mut backoff = Backoff::default();
        loop {
            match self.open_untimed(target, None).await {
                Ok(handle) => return Ok(handle),
                Err(Failure {
                    turned_away: Some(reason),
                    ..
                }) => {
                    tracing::debug!(host = %target.name, "connection turned away ({reason}); trying again");
                    tally.record(&reason);
                }
                Err(failure) => return Err(failure.error),
            }
            tokio::time::sleep(backoff.next_pause()).await;
        }
    }

    /// Only the host key, for keyscan: the handshake stops right after it.
    pub async fn fetch_key(&self, target: &Target) -> Result<PublicKey, TransportError> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let fetch =
            async { Ok::<_, TransportError>(self.open_untimed(target, Some(seen.clone())).await?) };
        let result = tokio::time::timeout(target.connect_timeout, fetch).await;
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = seen.key.take() {
            return Ok(key);
        }
        match result {
            // Failed before the host's key: TCP, or the jump host.
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(TransportError::Unreachable(format!(
                "host {}: the handshake ended without a host key",
                target.name
            ))),
            Err(_) => Err(TransportError::Unreachable(format!(
                "host {}: no host key received from {}:{} within {:?}",
                target.name,
                target.address,
                target.port.unwrap_or(22),
                target.connect_timeout
            ))),
        }
    }

    async fn open_untimed(
        &self,
        target: &Target,
        capture: Option<Arc<Mutex<Seen>>>,
    ) -> Result<Handle<Client>, Failure> {
        let port = target.port.unwrap_or(22);
        let name = &target.name;
        let check = HostKeyCheck::for_target(target);
        let config = config(check.preferred_keys(), self.keepalive);
        let capture_only = capture.is_some();
        let seen = capture.unwrap_or_default();
        let client = Client {
            check: (!capture_only).then_some(check),
            seen: seen.clone(),
        };
        let connected = match &target.ssh.jump_host {
            None => {
                let tcp = tokio::net::TcpStream::connect((target.address.as_str(), port))
                    .await
                    .map_err(|e| {
                        let error = TransportError::Unreachable(format!(
                            "host {name}: cannot connect to {}:{port}: {e}; \
                             check that the host is up and sshd listens there",
                            target.address
                        ));
                        match retry::io_turned_away(&e) {
                            true => Failure::turned_away(error, e),
                            false => error.into(),
                        }
                    })?;
                let _ = tcp.set_nodelay(true);
                client::connect_stream(config, tcp, client).await
            }
            Some(spec) => {
                let jump = self.jump(spec, target).await?;
                let channel = jump
                    .channel_open_direct_tcpip(target.address.as_str(), port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|e| {
                        TransportError::Unreachable(format!(
                            "host {name}: the jump host {spec} could not open a tunnel to {}:{port}: {e}; \
                             check that the jump host allows TCP forwarding and reaches the host",
                            target.address
                        ))
                    })?;
                client::connect_stream(config, channel.into_stream(), client).await
            }
        };
        let mut handle = connected.map_err(|e| {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            match &seen.refusal {
                Some(refusal) if !capture_only => TransportError::HostKey(refusal.clone()).into(),
                _ => {
                    let error = TransportError::Unreachable(format!(
                        "host {name}: the SSH handshake with {}:{port} failed: {e}",
                        target.address
                    ));
                    match retry::handshake_turned_away(&e) {
                        true => Failure::turned_away(error, format!("the handshake failed: {e}")),
                        false => error.into(),
                    }
                }
            }
        })?;
        let user = user_of(target);
        authenticate(
            &mut handle,
            name,
            &user,
            &target.ssh,
            &self.keys,
            self.agent.as_deref(),
        )
        .await?;
        Ok(handle)
    }

    /// The shared connection to the jump host `spec`, opened on first use.
    async fn jump(
        &self,
        spec: &str,
        target: &Target,
    ) -> Result<Arc<Handle<Client>>, TransportError> {
        let slot = {
            let mut jumps = self.jumps.lock().expect("jump lock");
            jumps.entry(spec.to_string()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(handle) = guard.as_ref().filter(|h| !h.is_closed()) {
            return Ok(handle.clone());
        }
        let (user, host, port) = parse_jump(spec).map_err(|e| {
            TransportError::Unreachable(format!(
                "host {}: cannot read the jump host {spec:?} (want user@host:port): {e}",
                target.name
            ))
        })?;
        let mut jump_target = target.clone();
        jump_target.name = format!("{host} (jump host of {})", target.name);
        jump_target.address = host;
        jump_target.port = Some(port);
        jump_target.user = user.or_else(|| target.user.clone());
        jump_target.ssh.jump_host = None;
        jump_target.ssh.host_key = None;
        let tally = Tally::default();
        let handle = Arc::new(Box::pin(self.open_retrying(&jump_target, &tally)).await?);
        *guard = Some(handle.clone());
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_jump;

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jump("msp@bastion.acme.example:2222").unwrap(),
            (Some("msp".into()), "bastion.acme.example".into(), 2222)
        );
        assert_eq!(parse_jump("bastion").unwrap(), (None, "bastion".into(), 22));
        assert_eq!(
            parse_jump("a@[::1]:23").unwrap(),
            (Some("a".into()), "::1".into(), 23)
        );
        assert!(parse_jump("msp@host:notaport").is_err());
        assert!(parse_jump("msp@").is_err());
    }
}
