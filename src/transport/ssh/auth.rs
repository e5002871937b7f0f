//! Logging in: private key files, the ssh-agent, passwords.
//!
//! Keys are read and decrypted once per run, not once per host: a fleet of
//! 300 hosts with a passphrase-protected key would otherwise spend seconds of
//! CPU in bcrypt-pbkdf. [`KeyCache`] holds one slot per key file, and the
//! first connection to need a key decrypts it while the others wait on the
//! same slot.
//!
//! Methods are tried in OpenSSH's order (key file, agent keys, password) and
//! every attempt is named in the error, so an operator sees at once which of
//! their inventory settings did not work. Secrets never reach a message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::sync::OnceCell;

use super::connect::Client;
use crate::transport::{SshSettings, Target, TransportError};

type Slot = Arc<OnceCell<Result<Arc<PrivateKey>, String>>>;

/// Decrypted private keys, by file, shared by every connection of a connector.
#[derive(Default)]
pub struct KeyCache {
    slots: Mutex<HashMap<PathBuf, Slot>>,
}

impl KeyCache {
    /// The key in `path`, decrypted with `passphrase` the first time it is asked for.
    pub async fn get(
        &self,
        path: &Path,
        passphrase: Option<&crate::transport::Secret>,
    ) -> Result<Arc<PrivateKey>, String> {
        let slot = {
            let mut slots = self.slots.lock().expect("key cache lock");
            slots.entry(path.to_path_buf()).or_default().clone()
        };
        let passphrase = passphrase.map(|p| p.expose().to_string());
        let path = path.to_path_buf();
        slot.get_or_init(|| async move {
            tokio::task::spawn_blocking(move || load_key(&path, passphrase.as_deref()))
                .await
                .unwrap_or_else(|e| Err(format!("key loading task failed: {e}")))
        })
        .await
        .clone()
    }
}

fn load_key(path: &Path, passphrase: Option<&str>) -> Result<Arc<PrivateKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    match russh::keys::decode_secret_key(&text, passphrase) {
        Ok(key) => Ok(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(format!(
            "the key file {} is encrypted; give its passphrase in the inventory",
            path.display()
        )),
        Err(e) if passphrase.is_some() => Err(format!(
            "cannot decrypt the key file {} (wrong passphrase?): {e}",
            path.display()
        )),
        Err(e) => Err(format!("cannot read the key file {}: {e}", path.display())),
    }
}

/// The user a target logs in as: the inventory's, else the local user.
pub fn user_of(target: &Target) -> String {
    target
        .user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_string())
}

/// Authenticates `handle` as `user`, trying every configured method in turn.
pub async fn authenticate(
    handle: &mut Handle<Client>,
    host: &str,
    user: &str,
    settings: &SshSettings,
    keys: &KeyCache,
    agent: Option<&Path>,
) -> Result<(), TransportError> {
    let mut tried: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let lost = |e: russh::Error| {
        TransportError::Unreachable(format!(
            "host {host}: the connection failed during authentication: {e}"
        ))
    };

    if let Some(path) = &settings.identity_file {
        tried.push(format!("publickey {}", path.display()));
        match keys.get(path, settings.identity_passphrase.as_ref()).await {
            Ok(key) => {
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(lost)?
                        .flatten()
                } else {
                    None
                };
                let result = handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                    .await
                    .map_err(lost)?;
                if result.success() {
                    return Ok(());
                }
            }
            Err(problem) => problems.push(problem),
        }
    }

    if let Some(socket) = agent {
        tried.push("ssh-agent".into());
        match AgentClient::connect_uds(socket).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(identities) => {
                    // Asked only if the agent holds an RSA key (it may wait for the server).
                    let mut rsa_hash = None;
                    for identity in identities {
                        let AgentIdentity::PublicKey { key, .. } = identity else {
                            continue;
                        };
                        let hash = if key.algorithm().is_rsa() {
                            if rsa_hash.is_none() {
                                rsa_hash =
                                    Some(handle.best_supported_rsa_hash().await.map_err(lost)?);
                            }
                            rsa_hash.flatten().flatten()
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(result) if result.success() => return Ok(()),
                            Ok(_) => {}
                            Err(e) => problems.push(format!("ssh-agent: {e}")),
                        }
                        if handle.is_closed() {
                            break;
                        }
                    }
                }
                Err(e) => problems.push(format!("ssh-agent does not list its keys: {e}")),
            },
            Err(e) => problems.push(format!("cannot reach the ssh-agent: {e}")),
        }
    }

    if let Some(password) = &settings.password {
        tried.push("password".into());
        let result = handle
            .authenticate_password(user, password.expose())
            .await
            .map_err(lost)?;
        if result.success() {
            return Ok(());
        }
    }

    let tried = if tried.is_empty() {
        "nothing: no key file, no ssh-agent (SSH_AUTH_SOCK), no password".to_string()
    } else {
        tried.join(", ")
    };
    let mut message = format!("host {host}: authentication as {user} failed (tried: {tried}); ");
    if !problems.is_empty() {
        message.push_str(&problems.join("; "));
        message.push_str("; ");
    }
    message.push_str("check the user, key and password secret in the inventory");
    Err(TransportError::Unreachable(message))
}
