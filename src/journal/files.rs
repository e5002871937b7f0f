//! The files a run was planned from, each with its SHA-256, so that
//! `resume` refuses to go on with a plan that is no longer the one the run
//! started with (`--force` goes on, and says what changed).
//!
//! Kept in a table of its own, `run_files`, one row per file: the playbook,
//! each file it includes, the inventory and each `script:`/`upload:`
//! source ([`crate::plan::FileRead`]). A journal written before this table
//! existed has only the playbook's and the inventory's hashes, in `runs`;
//! those are checked then.

use std::path::{Path, PathBuf};

use super::{Journal, JournalError, RunRow, file_sha256};
use crate::plan::FileRead;

/// A file as the journal recorded it when the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFile {
    /// Absolute, so that a run resumes from any folder.
    pub path: PathBuf,
    pub what: String,
    pub sha256: String,
}

impl RecordedFile {
    /// Reads and hashes each file of a plan, now.
    pub fn hash_all(files: &[FileRead]) -> Result<Vec<RecordedFile>, String> {
        files
            .iter()
            .map(|f| {
                let path = std::fs::canonicalize(&f.path)
                    .or_else(|_| std::path::absolute(&f.path))
                    .unwrap_or_else(|_| f.path.clone());
                let sha256 = file_sha256(&path)
                    .map_err(|e| format!("cannot read the {} {}: {e}", f.what, path.display()))?;
                Ok(RecordedFile {
                    path,
                    what: f.what.to_string(),
                    sha256,
                })
            })
            .collect()
    }
}

impl Journal {
    pub fn record_files(&self, run_id: &str, files: &[RecordedFile]) -> Result<(), JournalError> {
        self.with(|b| b.record_files(run_id, files))
    }

    /// The files `row`'s run was planned from, as recorded when it started.
    pub fn files(&self, row: &RunRow) -> Result<Vec<RecordedFile>, JournalError> {
        let files = self.with(|b| b.files(&row.run_id))?;
        if !files.is_empty() {
            return Ok(files);
        }
        // A journal from before `run_files`.
        Ok(vec![
            RecordedFile {
                path: PathBuf::from(&row.playbook),
                what: "playbook".into(),
                sha256: row.playbook_sha256.clone(),
            },
            RecordedFile {
                path: PathBuf::from(&row.inventory),
                what: "inventory".into(),
                sha256: row.inventory_sha256.clone(),
            },
        ])
    }
}

/// What changed in the files of run `run_id` since it started, one
/// sentence per file; empty when nothing did.
pub fn changes(run_id: &str, recorded: &[RecordedFile]) -> Vec<String> {
    recorded
        .iter()
        .filter_map(|f| change(run_id, f, &f.path))
        .collect()
}

fn change(run_id: &str, f: &RecordedFile, path: &Path) -> Option<String> {
    let short = |h: &str| h.get(..12).unwrap_or(h).to_string();
    match file_sha256(path) {
        Ok(now) if now == f.sha256 => None,
        Ok(now) => Some(format!(
            "the {} {} changed since run {run_id} started (sha256 {} → {})",
            f.what,
            path.display(),
            short(&f.sha256),
            short(&now)
        )),
        Err(e) => Some(format!(
            "the {} {} of run {run_id} cannot be read now ({e})",
            f.what,
            path.display()
        )),
    }
}
