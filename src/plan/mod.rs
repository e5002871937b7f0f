//! Plan: what will run where, decided before anything connects.
//!
//! A [`Plan`] is a pure function of a playbook, an inventory and a
//! [`Selection`]: clients → waves → hosts → steps with their commands
//! rendered for that host. Planning renders every template for every host
//! (or, where a template reads a value captured at run time, proves that it
//! can be rendered then), so a typo fails the whole run up front instead of
//! on host 312 of 400. `--dry-run` prints a plan; the runner executes one.

pub mod baseline;
pub mod glob;
pub mod redact;
pub mod secrets;
pub mod syntax;
mod template_secrets;
pub mod templates;
pub mod waves;

mod build;
mod files;
mod render_workers;
mod steps;
mod targets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use build::{PlanOptions, Selection, build_plan};
pub use files::FileRead;
pub use secrets::{LiveRedactor, MissingSecrets, Redactor, SecretStore};
pub use steps::render_action;
pub use targets::targets;
pub use templates::Templates;

use crate::load::{Pause, Playbook, Size, Step};
use crate::transport::{Os, Script, Target};

pub struct Plan {
    pub playbook: Arc<Playbook>,
    pub playbook_path: PathBuf,
    pub inventory_path: PathBuf,
    pub clients: Vec<ClientPlan>,
    /// Every file the plan was made from (secrets excluded), for `resume`.
    pub files_read: Vec<FileRead>,
    pub templates: Arc<Templates>,
    pub secrets: Arc<SecretStore>,
}

impl Plan {
    pub fn hosts(&self) -> impl Iterator<Item = &HostPlan> {
        self.clients.iter().flat_map(|c| c.hosts.iter())
    }

    pub fn redactor(&self) -> Arc<Redactor> {
        self.secrets.redactor()
    }
}

pub struct ClientPlan {
    pub name: String,
    pub waves: Vec<Wave>,
    /// Every selected host of the client, in inventory order, skipped ones included.
    pub hosts: Vec<HostPlan>,
    pub failure_budget: Size,
    /// More failed hosts than this halts the client.
    pub allowed_failures: usize,
    pub pause_between_waves: Pause,
    /// Hosts of this client at once.
    pub concurrency: usize,
    /// Only workers of this site take the client (`site:` in the inventory).
    pub site: Option<String>,
}

impl ClientPlan {
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Wave {
    /// 1-based.
    pub index: usize,
    pub hosts: Vec<String>,
}

pub struct HostPlan {
    pub name: String,
    pub client: String,
    pub os: Os,
    /// 1-based wave; `None` for a skipped host.
    pub wave: Option<usize>,
    /// Why the host is skipped (its OS is not the playbook's), if it is.
    pub skipped: Option<String>,
    pub target: Target,
    /// Variables for the host's templates (everything but captured values),
    /// without `host`: shared by the hosts whose variables are the same
    /// (the usual case in a client), so a fleet holds them once per client,
    /// not once per host. [`HostPlan::vars`] gives them all.
    pub shared_vars: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The `host` variable (name, address, os, client, ...), the host's own.
    pub host_var: serde_json::Value,
    pub steps: Vec<PlannedStep>,
    pub on_failure: Vec<PlannedStep>,
    /// Probes run before the first step and after the last, compared.
    pub baseline: Vec<baseline::PlannedProbe>,
    /// When a reboot a step asks for may happen (`reboot:` in the inventory).
    pub reboot: crate::load::RebootPolicy,
    /// What that reboot does while people are logged on (`reboot_with_users:`).
    pub reboot_with_users: crate::load::RebootWithUsers,
}

impl HostPlan {
    /// Every variable of the host's templates, `host` included, as they
    /// were when the plan was made.
    pub fn vars(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut vars = serde_json::Map::clone(&self.shared_vars);
        vars.insert("host".into(), self.host_var.clone());
        vars
    }
}

/// A step as defined in the playbook, shared by all hosts' plans.
#[derive(Debug)]
pub struct StepDef {
    /// Names the step's templates, e.g. `phases[1].steps[0].rollback[0]`.
    pub key: String,
    pub phase: String,
    pub step: Step,
    pub rollback: Vec<Arc<StepDef>>,
}

/// A step for one host.
pub struct PlannedStep {
    pub def: Arc<StepDef>,
    /// The command as it will run; `None` when it reads a captured value
    /// and is rendered at run time. Shared by every host whose rendering
    /// is the same (most commands read no host-specific value): a fleet of
    /// 10,000 hosts would otherwise hold 10,000 copies of each script for
    /// the whole run.
    pub action: Option<Arc<RenderedAction>>,
    /// The step's `when` reads captured values: decided at run time.
    pub when_deferred: bool,
    /// Known at plan time not to run on this host (`os`, or a `when` that
    /// is already false), and why.
    pub skip: Option<String>,
    pub rollback: Vec<PlannedStep>,
}

impl PlannedStep {
    pub fn name(&self) -> &str {
        &self.def.step.name
    }
    pub fn phase(&self) -> &str {
        &self.def.phase
    }
}

/// A step's action with every template rendered, and the longest one try
/// of it may take.
///
/// The limit travels with the action (rather than being read back from
/// the loaded step) because what it bounds depends on the action, and the
/// runner must honour it for every one: a command is killed at it, an
/// upload (a `script`'s included) is cut off, a reboot stops waiting for
/// the host. A `reboot:` step has two limits, its own `timeout` (the wait
/// for the host, 10 minutes unless given) and the step's; the shorter is
/// carried. A `wait:` is never longer than its step's `timeout` (the
/// loader refuses that: it could only time out).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenderedAction {
    pub kind: ActionKind,
    /// `None`: no limit. Always set for a reboot.
    pub timeout: Option<Duration>,
}

/// What a rendered action does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Shell(Script),
    /// Upload the controller's `src` to a temporary path, run it with `args`, remove it.
    Script {
        src: PathBuf,
        args: Vec<String>,
    },
    Upload {
        src: PathBuf,
        dest: String,
        mode: u32,
    },
    /// Restart the host and wait, up to the action's timeout, for it to come back.
    Reboot,
    Wait(Duration),
}

impl RenderedAction {
    /// The command as a person reads it in a plan (not yet redacted).
    pub fn describe(&self) -> String {
        use crate::load::HumanDuration;
        match &self.kind {
            ActionKind::Shell(script) => script.text().to_string(),
            ActionKind::Script { src, args } => {
                let mut line = format!("script {}", src.display());
                for arg in args {
                    line.push(' ');
                    line.push_str(arg);
                }
                line
            }
            ActionKind::Upload { src, dest, mode } => {
                format!("upload {} -> {dest} (mode {mode:04o})", src.display())
            }
            ActionKind::Reboot => {
                format!(
                    "reboot, then wait up to {} for the host",
                    HumanDuration(self.reboot_wait())
                )
            }
            ActionKind::Wait(d) => format!("wait {}", HumanDuration(*d)),
        }
    }

    /// The keyword of the action, as written in the playbook.
    pub fn keyword(&self) -> &'static str {
        match &self.kind {
            ActionKind::Shell(Script::Default(_)) => "run",
            ActionKind::Shell(Script::Sh(_)) => "sh",
            ActionKind::Shell(Script::PowerShell(_)) => "powershell",
            ActionKind::Shell(Script::Cmd(_)) => "cmd",
            ActionKind::Script { .. } => "script",
            ActionKind::Upload { .. } => "upload",
            ActionKind::Reboot => "reboot",
            ActionKind::Wait(_) => "wait",
        }
    }

    /// How long a reboot waits for the host: the action's limit (a
    /// `reboot:` step's, or, after a `reboot_codes` code, the step's
    /// `timeout`), else the default.
    pub fn reboot_wait(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_REBOOT_TIMEOUT)
    }
}

/// The longest one try of `step`'s action may take (see [`RenderedAction`]).
/// Known without rendering, so a plan shows it even for steps rendered at
/// run time.
pub fn action_timeout(step: &Step) -> Option<Duration> {
    let own = step.timeout.map(|t| t.0);
    match &step.action {
        crate::load::Action::Reboot { timeout } => {
            let wait = timeout.map(|t| t.0).unwrap_or(DEFAULT_REBOOT_TIMEOUT);
            Some(own.map_or(wait, |own| own.min(wait)))
        }
        _ => own,
    }
}

/// The default timeout of a `reboot` step.
pub const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Relative script and upload sources are relative to the file the step
/// is written in.
pub(crate) fn resolve_source(playbook_dir: &Path, src: &str) -> PathBuf {
    let path = PathBuf::from(src);
    if path.is_absolute() {
        path
    } else {
        playbook_dir.join(path)
    }
}
