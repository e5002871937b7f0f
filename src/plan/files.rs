//! The files a plan was made from, so that `resume` can tell whether it
//! would now run something else.
//!
//! That is the playbook and every file it includes, the inventory, and
//! every `script:` and `upload:` source a host's plan names. A source
//! rendered only at run time (its path reads a captured value) is not
//! known here and is not listed. Files in the inventory's `secrets_dir`
//! are left out on purpose: even a hash of a secret is a fingerprint of it,
//! and the journal keeps nothing that says anything about a secret.

use std::path::{Path, PathBuf};

use super::{ActionKind, ClientPlan, PlannedStep};
use crate::load::{Inventory, Playbook};

/// A file read to make the plan, and what it was to the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub path: PathBuf,
    /// `playbook`, `included file`, `inventory`, `script` or `upload source`.
    pub what: &'static str,
}

pub(super) fn files_read(
    playbook: &Playbook,
    inventory: &Inventory,
    clients: &[ClientPlan],
) -> Vec<FileRead> {
    let mut files = Vec::new();
    let mut add = |path: &Path, what: &'static str| {
        if !files.iter().any(|f: &FileRead| f.path == path) {
            files.push(FileRead {
                path: path.to_path_buf(),
                what,
            });
        }
    };
    for (i, path) in playbook.files.iter().enumerate() {
        add(path, if i == 0 { "playbook" } else { "included file" });
    }
    add(&inventory.source.path, "inventory");
    let secrets = inventory.secrets_dir.as_deref().map(canonical);
    let is_secret = |path: &Path| {
        secrets
            .as_deref()
            .is_some_and(|dir| canonical(path).starts_with(dir))
    };
    let mut sources: Vec<(&Path, &'static str)> = Vec::new();
    for host in clients.iter().flat_map(|c| &c.hosts) {
        for step in host.steps.iter().chain(&host.on_failure) {
            collect_sources(step, &mut sources);
        }
    }
    for (path, what) in sources {
        if !is_secret(path) {
            add(path, what);
        }
    }
    files
}

fn collect_sources<'a>(step: &'a PlannedStep, into: &mut Vec<(&'a Path, &'static str)>) {
    match step.action.as_ref().map(|a| &a.kind) {
        Some(ActionKind::Script { src, .. }) => into.push((src, "script")),
        Some(ActionKind::Upload { src, .. }) => into.push((src, "upload source")),
        _ => {}
    }
    for r in &step.rollback {
        collect_sources(r, into);
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
