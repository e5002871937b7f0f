//! Transport targets from the inventory: who to reach and how, with the
//! connection settings of defaults, client and host resolved (nearest
//! wins) and the secrets they name read.

use std::time::Duration;

use super::build::{PlanOptions, select};
use super::secrets::SecretStore;
use crate::load::{Client, Host, InputErrors, Inventory};
use crate::transport::{Become, Secret, SshSettings, Target, TransportKind, WinrmSettings};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The transport targets of the selected hosts, for commands that reach
/// hosts without a playbook (`keyscan`).
pub fn targets(inventory: &Inventory, options: &PlanOptions) -> Result<Vec<Target>, InputErrors> {
    let secrets = SecretStore::new(inventory.secrets_dir.clone(), options.missing_secrets);
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (client, hosts) in select(inventory, &options.selection)? {
        for host in hosts {
            match target_for(inventory, client, host, Some(&secrets), options) {
                Ok(target) => targets.push(target),
                Err(m) => errors.push(inventory.source.error_at(
                    host.at.line,
                    host.at.column,
                    format!("host `{}`: {m}", host.name),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(InputErrors(errors))
    }
}

pub(super) fn target_for(
    inventory: &Inventory,
    client: &Client,
    host: &Host,
    secrets: Option<&SecretStore>,
    options: &PlanOptions,
) -> Result<Target, String> {
    let c = inventory.connection(client, host);
    let secret = |name: &Option<String>, what: &str| -> Result<Option<Secret>, String> {
        match (name, secrets) {
            (Some(n), Some(store)) => store.get(n).map(Some).map_err(|e| format!("{what}: {e}")),
            _ => Ok(None),
        }
    };
    let kind = c.transport.unwrap_or(TransportKind::Ssh);
    let (ssh_password, winrm_password) = match kind {
        TransportKind::Ssh => (secret(&c.ssh.password_secret, "ssh.password_secret")?, None),
        TransportKind::Winrm => (
            None,
            secret(&c.winrm.password_secret, "winrm.password_secret")?,
        ),
        TransportKind::Local => (None, None),
    };
    let passphrase = match kind {
        TransportKind::Ssh => secret(&c.ssh.passphrase_secret, "ssh.passphrase_secret")?,
        _ => None,
    };
    // Windows hosts never become (the plan refuses it), so need no password.
    let os = host.os_in(client, inventory);
    let become_password = if os.is_posix() {
        secret(&c.r#become.password_secret, "become.password_secret")?
    } else {
        None
    };
    let defaults = WinrmSettings::default();
    let tls = c.winrm.tls.unwrap_or(defaults.tls);
    Ok(Target {
        name: host.name.clone(),
        address: host.address.clone(),
        port: c.port,
        os,
        user: c.user.clone(),
        kind,
        ssh: SshSettings {
            identity_file: c
                .ssh
                .identity_file
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            identity_passphrase: passphrase,
            password: ssh_password,
            known_hosts: c
                .ssh
                .known_hosts
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            host_key: c.ssh.host_key.clone(),
            jump_host: c.jump_host.clone(),
        },
        winrm: WinrmSettings {
            port: c
                .winrm
                .port
                .or(c.port)
                .unwrap_or(if tls { 5986 } else { 5985 }),
            tls,
            auth: c.winrm.auth.unwrap_or(defaults.auth),
            password: winrm_password,
            ca_file: c
                .winrm
                .ca_file
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            insecure_skip_verify: c.winrm.insecure_skip_verify.unwrap_or(false),
        },
        host_key_policy: options.host_key_policy,
        connect_timeout: c
            .connect_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        reboot_command: c.reboot_command.clone(),
        r#become: Become {
            method: c.r#become.method.unwrap_or_default(),
            user: c.r#become.user.clone().unwrap_or_else(|| "root".into()),
            password: become_password,
        },
    })
}
