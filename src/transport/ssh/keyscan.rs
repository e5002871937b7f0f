//! `orchestrate keyscan`: fetch every host's key, compare, record the new ones.
//!
//! Like `ssh-keyscan`, but it knows the inventory: hosts behind a jump host
//! are scanned through it, pinned keys are compared as well as known_hosts,
//! and the answer per host is one of new / unchanged / changed /
//! unreachable, so the operator reviews only what moved. Each handshake
//! stops right after the server proves its key; nothing logs in (except to
//! the jump hosts, which must be authenticated to tunnel).
//!
//! New keys are recorded in the host's known_hosts file (under any policy
//! but `off`); changed keys never are.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::connect::{Comparison, Dialer, HostKeyCheck};
use super::known_hosts::fingerprint;
use crate::transport::{HostKeyPolicy, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyscanStatus {
    /// Not known before. `recorded` is `Err(reason)` if it could not be written.
    New {
        fingerprint: String,
        recorded: Result<(), String>,
    },
    /// Matches the known_hosts line or the pinned key.
    Unchanged {
        fingerprint: String,
    },
    /// Differs from what is recorded or pinned: never recorded, look into it.
    Changed {
        presented: String,
        known: String,
    },
    Unreachable(String),
}

#[derive(Debug, Clone)]
pub struct KeyscanOutcome {
    /// The inventory name.
    pub host: String,
    /// The key type the host presented (`ssh-ed25519`, ...), if it answered.
    pub key_type: Option<String>,
    pub status: KeyscanStatus,
}

/// Scans `targets`, at most `parallel` at once, with a connector of its own
/// (the ssh-agent of `SSH_AUTH_SOCK` logs in to jump hosts, if needed).
pub async fn keyscan(targets: &[Target], parallel: usize) -> Vec<KeyscanOutcome> {
    super::SshConnector::new().keyscan(targets, parallel).await
}

pub(super) async fn scan(
    dialer: Arc<Dialer>,
    targets: &[Target],
    parallel: usize,
) -> Vec<KeyscanOutcome> {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(targets.len());
    for target in targets {
        let target = target.clone();
        let dialer = dialer.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("never closed");
            scan_one(&dialer, &target).await
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (task, target) in tasks.into_iter().zip(targets) {
        outcomes.push(task.await.unwrap_or_else(|e| KeyscanOutcome {
            host: target.name.clone(),
            key_type: None,
            status: KeyscanStatus::Unreachable(format!("scan task failed: {e}")),
        }));
    }
    outcomes
}

async fn scan_one(dialer: &Dialer, target: &Target) -> KeyscanOutcome {
    let key = match dialer.fetch_key(target).await {
        Ok(key) => key,
        Err(e) => {
            return KeyscanOutcome {
                host: target.name.clone(),
                key_type: None,
                status: KeyscanStatus::Unreachable(e.to_string()),
            };
        }
    };
    let check = HostKeyCheck::for_target(target);
    let presented = fingerprint(&key);
    let status = match check.compare(&key) {
        Comparison::PinnedMatch | Comparison::Known => KeyscanStatus::Unchanged {
            fingerprint: presented,
        },
        Comparison::PinnedMismatch { pinned } => KeyscanStatus::Changed {
            presented,
            known: format!("{} (pinned in the inventory)", fingerprint(&pinned)),
        },
        Comparison::Changed { known, line } => KeyscanStatus::Changed {
            presented,
            known: format!("{} (known_hosts line {line})", fingerprint(&known)),
        },
        Comparison::Revoked { line } => KeyscanStatus::Changed {
            presented,
            known: format!("marked @revoked at known_hosts line {line}"),
        },
        Comparison::Unreadable(e) => KeyscanStatus::Unreachable(format!(
            "host {}: key {presented} received but cannot be compared: {e}",
            target.name
        )),
        Comparison::Unknown => {
            let recorded = if target.host_key_policy == HostKeyPolicy::Off {
                Err("not recorded: --host-key-policy off".to_string())
            } else {
                check.record(&key)
            };
            KeyscanStatus::New {
                fingerprint: presented,
                recorded,
            }
        }
    };
    KeyscanOutcome {
        host: target.name.clone(),
        key_type: Some(key.algorithm().as_str().to_string()),
        status,
    }
}
