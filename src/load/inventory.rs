//! Inventories: the MSP's clients, their hosts, and how to reach them.
//!
//! Connection settings are written at three levels (inventory `defaults`, a
//! client, a host) and the nearest wins, field by field. This module reads
//! and checks the file; [`Inventory::connection`] resolves the levels for
//! one host. Reading secrets and building transport targets is the planner's
//! business, not the loader's.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::diagnostic::{InputError, InputErrors, SourceFile};
use super::playbook::{Place, Vars, check_wave_list};
use super::reboot::{RebootKind, RebootPolicy, RebootWindow, RebootWindowDoc, RebootWithUsers};
use super::values::{HumanDuration, Pause, Size};
use crate::transport::{BecomeMethod, Os, TransportKind, WinrmAuth};

#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: SourceFile,
    pub defaults: Connection,
    pub default_vars: Vars,
    pub default_os: Option<Os>,
    /// Resolved against the inventory's folder.
    pub secrets_dir: Option<PathBuf>,
    pub clients: Vec<Client>,
    /// `must_reach` of the defaults (a client's or a host's list wins).
    pub must_reach: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub connection: Connection,
    pub waves: Option<Vec<Size>>,
    /// Where `waves` is written, for "cannot cover the client" errors.
    pub waves_at: Place,
    pub failure_budget: Option<Size>,
    pub pause_between_waves: Option<Pause>,
    pub concurrency: Option<usize>,
    /// Only workers started with this `--site` take the client.
    pub site: Option<String>,
    pub vars: Vars,
    pub os: Option<Os>,
    pub hosts: Vec<Host>,
    pub at: Place,
    pub must_reach: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub os: Option<Os>,
    pub connection: Connection,
    pub vars: Vars,
    pub at: Place,
    pub must_reach: Option<Vec<String>>,
}

/// Connection settings at one level; `None` means "from the level above".
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    #[serde(default)]
    pub transport: Option<TransportKind>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub jump_host: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub reboot_command: Option<String>,
    /// `now`, `window` or `ask`: when a reboot a step asks for happens.
    #[serde(default)]
    pub reboot: Option<RebootKind>,
    /// The maintenance window `reboot: window` waits for (as a whole: the
    /// nearest level that has one).
    #[serde(default)]
    #[schemars(with = "Option<RebootWindowDoc>")]
    pub reboot_window: Option<RebootWindow>,
    /// `reboot`, `ask` or `refuse`: a reboot while people are logged on.
    #[serde(default)]
    pub reboot_with_users: Option<RebootWithUsers>,
    #[serde(default)]
    pub ssh: SshDoc,
    #[serde(default)]
    pub winrm: WinrmDoc,
    #[serde(default, rename = "become")]
    pub r#become: BecomeDoc,
}

/// How steps marked `become` in a playbook run as another user; each key
/// from the nearest level that sets it.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BecomeDoc {
    /// `sudo` (the only method today).
    #[serde(default)]
    pub method: Option<BecomeMethod>,
    /// The user to become (default `root`).
    #[serde(default)]
    pub user: Option<String>,
    /// Name of the secret holding the login user's password for sudo.
    #[serde(default)]
    pub password_secret: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshDoc {
    #[serde(default)]
    pub identity_file: Option<String>,
    /// Name of the secret holding the identity file's passphrase.
    #[serde(default)]
    pub passphrase_secret: Option<String>,
    /// Name of the secret holding a password for password authentication.
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// A pinned host key: `ssh-ed25519 AAAA...`.
    #[serde(default)]
    pub host_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WinrmDoc {
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: Option<bool>,
    #[serde(default)]
    pub auth: Option<WinrmAuth>,
    #[serde(default)]
    pub password_secret: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

/// The inner level's value of a field if it has one, else the outer's.
macro_rules! nearest {
    ($inner:ident, $outer:ident; $($field:ident).+) => {
        $inner.$($field).+.clone().or_else(|| $outer.$($field).+.clone())
    };
}

impl Connection {
    /// Settings of `self`, falling back to `outer` field by field.
    pub fn over(&self, outer: &Connection) -> Connection {
        Connection {
            transport: nearest!(self, outer; transport),
            user: nearest!(self, outer; user),
            port: nearest!(self, outer; port),
            jump_host: nearest!(self, outer; jump_host),
            connect_timeout: nearest!(self, outer; connect_timeout),
            reboot_command: nearest!(self, outer; reboot_command),
            reboot: nearest!(self, outer; reboot),
            reboot_window: nearest!(self, outer; reboot_window),
            reboot_with_users: nearest!(self, outer; reboot_with_users),
            ssh: SshDoc {
                identity_file: nearest!(self, outer; ssh.identity_file),
                passphrase_secret: nearest!(self, outer; ssh.passphrase_secret),
                password_secret: nearest!(self, outer; ssh.password_secret),
                known_hosts: nearest!(self, outer; ssh.known_hosts),
                host_key: nearest!(self, outer; ssh.host_key),
            },
            winrm: WinrmDoc {
                port: nearest!(self, outer; winrm.port),
                tls: nearest!(self, outer; winrm.tls),
                auth: nearest!(self, outer; winrm.auth),
                password_secret: nearest!(self, outer; winrm.password_secret),
                ca_file: nearest!(self, outer; winrm.ca_file),
                insecure_skip_verify: nearest!(self, outer; winrm.insecure_skip_verify),
            },
            r#become: BecomeDoc {
                method: nearest!(self, outer; r#become.method),
                user: nearest!(self, outer; r#become.user),
                password_secret: nearest!(self, outer; r#become.password_secret),
            },
        }
    }
}

impl Inventory {
    /// The folder relative paths in the inventory are taken from.
    pub fn dir(&self) -> PathBuf {
        self.source.dir()
    }

    /// A host's connection settings with client and defaults filled in.
    pub fn connection(&self, client: &Client, host: &Host) -> Connection {
        host.connection
            .over(&client.connection)
            .over(&self.defaults)
    }

    /// A path from the inventory: `~` is the home folder, relative paths
    /// are relative to the inventory file.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        if let Some(rest) = path.strip_prefix("~/")
            && let Some(home) = std::env::var_os("HOME")
        {
            return PathBuf::from(home).join(rest);
        }
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            self.dir().join(path)
        }
    }

    pub fn hosts(&self) -> impl Iterator<Item = (&Client, &Host)> {
        self.clients
            .iter()
            .flat_map(|c| c.hosts.iter().map(move |h| (c, h)))
    }
}

// ---- the file as written ----

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InventoryDoc {
    #[serde(default)]
    defaults: DefaultsDoc,
    #[serde(default)]
    secrets_dir: Option<String>,
    #[schemars(with = "IndexMap<String, ClientDoc>")]
    clients: Spanned<IndexMap<String, Spanned<ClientDoc>>>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DefaultsDoc {
    #[serde(default)]
    transport: Option<TransportKind>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    jump_host: Option<String>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    reboot_command: Option<String>,
    #[serde(default)]
    reboot: Option<RebootKind>,
    #[serde(default)]
    #[schemars(with = "Option<RebootWindowDoc>")]
    reboot_window: Option<RebootWindow>,
    #[serde(default)]
    reboot_with_users: Option<RebootWithUsers>,
    #[serde(default)]
    ssh: SshDoc,
    #[serde(default)]
    winrm: WinrmDoc,
    #[serde(default, rename = "become")]
    r#become: BecomeDoc,
    #[serde(default)]
    os: Option<Os>,
    #[serde(default)]
    vars: Vars,
    /// `host:port` targets the endpoint must still reach after the change (checked from the endpoint, before and after). The nearest level's list wins.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    must_reach: Option<Vec<Spanned<String>>>,
}

// The connection keys are written out in each level's document rather than
// shared through `#[serde(flatten)]`: flatten turns `deny_unknown_fields`
// off and loses serde-saphyr's line and column, and a typo in an inventory
// must be an error at its place. `connection_of!` gathers them again.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClientDoc {
    #[serde(default)]
    transport: Option<TransportKind>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    jump_host: Option<String>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    reboot_command: Option<String>,
    #[serde(default)]
    reboot: Option<RebootKind>,
    #[serde(default)]
    #[schemars(with = "Option<RebootWindowDoc>")]
    reboot_window: Option<RebootWindow>,
    #[serde(default)]
    reboot_with_users: Option<RebootWithUsers>,
    #[serde(default)]
    ssh: SshDoc,
    #[serde(default)]
    winrm: WinrmDoc,
    #[serde(default, rename = "become")]
    r#become: BecomeDoc,
    #[serde(default)]
    os: Option<Os>,
    #[serde(default)]
    vars: Vars,
    #[serde(default)]
    #[schemars(with = "Option<Vec<Size>>")]
    waves: Option<Spanned<Vec<Size>>>,
    #[serde(default)]
    failure_budget: Option<Size>,
    #[serde(default)]
    pause_between_waves: Option<Pause>,
    #[serde(default)]
    concurrency: Option<u32>,
    /// Only `orchestrate worker --site NAME` takes this client's work
    /// (a queued run): the machine at the client's site.
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<HostDoc>>")]
    hosts: Option<Spanned<Vec<Spanned<HostDoc>>>>,
    /// `host:port` targets the endpoint must still reach after the change (checked from the endpoint, before and after). The nearest level's list wins.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    must_reach: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HostDoc {
    #[schemars(with = "String")]
    name: Spanned<String>,
    address: Option<String>,
    #[serde(default)]
    os: Option<Os>,
    #[serde(default)]
    transport: Option<TransportKind>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    jump_host: Option<String>,
    #[serde(default)]
    connect_timeout: Option<HumanDuration>,
    #[serde(default)]
    reboot_command: Option<String>,
    #[serde(default)]
    reboot: Option<RebootKind>,
    #[serde(default)]
    #[schemars(with = "Option<RebootWindowDoc>")]
    reboot_window: Option<RebootWindow>,
    #[serde(default)]
    reboot_with_users: Option<RebootWithUsers>,
    #[serde(default)]
    host_key: Option<String>,
    #[serde(default)]
    ssh: SshDoc,
    #[serde(default)]
    winrm: WinrmDoc,
    #[serde(default, rename = "become")]
    r#become: BecomeDoc,
    #[serde(default)]
    vars: Vars,
    /// `host:port` targets the endpoint must still reach after the change (checked from the endpoint, before and after). The nearest level's list wins.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    must_reach: Option<Vec<Spanned<String>>>,
}

/// Builds a [`Connection`] from the connection keys of any level's document.
macro_rules! connection_of {
    ($doc:expr) => {
        Connection {
            transport: $doc.transport,
            user: $doc.user,
            port: $doc.port,
            jump_host: $doc.jump_host,
            connect_timeout: $doc.connect_timeout,
            reboot_command: $doc.reboot_command,
            reboot: $doc.reboot,
            reboot_window: $doc.reboot_window,
            reboot_with_users: $doc.reboot_with_users,
            ssh: $doc.ssh,
            winrm: $doc.winrm,
            r#become: $doc.r#become,
        }
    };
}

/// Reads and checks an inventory file.
pub fn load_inventory(path: &Path) -> Result<Inventory, InputErrors> {
    let source = SourceFile::read(path)?;
    parse_inventory(source)
}

pub fn parse_inventory(source: SourceFile) -> Result<Inventory, InputErrors> {
    let doc: InventoryDoc = super::parse_yaml(&source)?;
    let mut errors: Vec<InputError> = Vec::new();
    let mut seen_hosts: IndexMap<String, Place> = IndexMap::new();
    let mut clients = Vec::new();

    if doc.clients.value.is_empty() {
        errors.push(
            source.error_at_location(&doc.clients.referenced, "the inventory has no clients"),
        );
    }
    for (name, client) in doc.clients.value {
        let at = Place::of(&client.referenced);
        let c = client.value;
        let host_docs = match c.hosts {
            Some(hosts) if !hosts.value.is_empty() => hosts.value,
            Some(hosts) => {
                errors.push(source.error_at_location(
                    &hosts.referenced,
                    format!(
                        "client `{name}` has an empty host list; add hosts or remove the client"
                    ),
                ));
                Vec::new()
            }
            None => {
                errors.push(source.error_at(
                    at.line,
                    at.column,
                    format!("client `{name}` has no hosts; add a `hosts:` list"),
                ));
                Vec::new()
            }
        };
        if let Some(waves) = &c.waves {
            check_wave_list(&source, waves, &mut errors);
        }
        if c.concurrency == Some(0) {
            errors.push(source.error_at(
                at.line,
                at.column,
                format!("client `{name}`: concurrency 0 would never start a host"),
            ));
        }
        let must_reach = super::must_reach::check(&source, c.must_reach, &mut errors);
        let mut hosts = Vec::new();
        for host in host_docs {
            let host_at = Place::of(&host.referenced);
            let h = host.value;
            let host_name = h.name.value.clone();
            if host_name.trim().is_empty() {
                errors.push(
                    source.error_at_location(&h.name.referenced, "a host name cannot be empty"),
                );
                continue;
            }
            if let Some(first) = seen_hosts.get(&host_name) {
                errors.push(
                    source
                        .error_at_location(
                            &h.name.referenced,
                            format!(
                                "host `{host_name}` is already defined at line {}; host names must be unique across the inventory",
                                first.line
                            ),
                        )
                        .with_help("rename one of them; reports and resume find hosts by name"),
                );
                continue;
            }
            seen_hosts.insert(host_name.clone(), Place::of(&h.name.referenced));
            let Some(address) = h.address.clone() else {
                errors.push(source.error_at(
                    host_at.line,
                    host_at.column,
                    format!("host `{host_name}` has no address"),
                ));
                continue;
            };
            let mut h = h;
            if let Some(key) = h.host_key.take() {
                h.ssh.host_key = Some(key);
            }
            let os = h.os;
            let vars = std::mem::take(&mut h.vars);
            let must_reach = super::must_reach::check(&source, h.must_reach.take(), &mut errors);
            let connection = connection_of!(h);
            if os.or(c.os).or(doc.defaults.os).is_none() {
                errors.push(source.error_at(
                    host_at.line,
                    host_at.column,
                    format!("host `{host_name}` has no os; write os: windows, linux or macos"),
                ));
                continue;
            }
            hosts.push(Host {
                name: host_name,
                address,
                os,
                connection,
                vars,
                at: host_at,
                must_reach,
            });
        }
        clients.push(Client {
            name,
            waves_at: c
                .waves
                .as_ref()
                .map(|w| Place::of(&w.referenced))
                .unwrap_or(at),
            waves: c.waves.map(|w| w.value),
            failure_budget: c.failure_budget,
            pause_between_waves: c.pause_between_waves,
            concurrency: c.concurrency.map(|n| n as usize),
            site: c.site,
            vars: c.vars,
            os: c.os,
            hosts,
            at,
            must_reach,
            connection: connection_of!(c),
        });
    }
    let must_reach = super::must_reach::check(&source, doc.defaults.must_reach, &mut errors);
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    let default_vars = doc.defaults.vars;
    let default_os = doc.defaults.os;
    let mut inventory = Inventory {
        defaults: connection_of!(doc.defaults),
        default_vars,
        default_os,
        secrets_dir: None,
        clients,
        must_reach,
        source,
    };
    inventory.secrets_dir = doc.secrets_dir.map(|d| inventory.resolve_path(&d));
    Ok(inventory)
}

impl Inventory {
    /// A host's reboot policy, its window checked to be there.
    pub fn reboot_policy(&self, client: &Client, host: &Host) -> Result<RebootPolicy, String> {
        let c = self.connection(client, host);
        match c.reboot.unwrap_or_default() {
            RebootKind::Now => Ok(RebootPolicy::Now),
            RebootKind::Ask => Ok(RebootPolicy::Ask),
            RebootKind::Window => c.reboot_window.map(RebootPolicy::Window).ok_or_else(|| {
                "`reboot: window` needs a `reboot_window` (host, client or defaults), e.g. { days: [sat, sun], start: \"22:00\", end: \"04:00\", tz: America/New_York }".to_string()
            }),
        }
    }
}

impl Inventory {
    /// What a reboot of this host does while people are logged on.
    pub fn reboot_with_users(&self, client: &Client, host: &Host) -> RebootWithUsers {
        self.connection(client, host)
            .reboot_with_users
            .unwrap_or_default()
    }
}

impl Host {
    /// The host's OS, from the host, its client or the defaults (checked at load).
    pub fn os_in(&self, client: &Client, inventory: &Inventory) -> Os {
        self.os
            .or(client.os)
            .or(inventory.default_os)
            .unwrap_or(Os::Linux)
    }

    /// What the host must still reach: its own list, its client's or the
    /// defaults' (the nearest list wins, whole).
    pub fn must_reach_in<'a>(
        &'a self,
        client: &'a Client,
        inventory: &'a Inventory,
    ) -> &'a [String] {
        self.must_reach
            .as_deref()
            .or(client.must_reach.as_deref())
            .or(inventory.must_reach.as_deref())
            .unwrap_or(&[])
    }
}
