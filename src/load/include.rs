//! `include: FILE`: opening the files a playbook takes phases and steps from.
//!
//! A path is relative to the file that includes it, as a C `#include` or
//! an Ansible `include_tasks` is, so a folder of playbooks and their
//! `common/` parts can move as one. Each file opened carries the chain of
//! include sites that led to it ([`SourceFile::included_from`]), so that an
//! error anywhere in it, found now or at plan time, says how it got there.
//! A file met again on its own chain is a cycle, an error naming the whole
//! cycle; the same file included twice side by side is fine.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::diagnostic::{InputError, SourceFile};
use super::playbook::Place;

/// The files opened so far and the chain being expanded.
pub(super) struct Includes {
    /// Canonical path and name of each file on the current chain, the
    /// playbook first.
    chain: Vec<(PathBuf, String)>,
    /// Every playbook file read, the playbook first, each once.
    pub(super) files: Vec<PathBuf>,
}

impl Includes {
    pub(super) fn new(playbook: &SourceFile) -> Includes {
        Includes {
            chain: vec![(canonical(&playbook.path), playbook.name())],
            files: vec![playbook.path.clone()],
        }
    }

    /// Opens the file `include` names, from the file `from`, and enters
    /// it: call [`Includes::leave`] when its contents are converted.
    pub(super) fn enter(
        &mut self,
        from: &SourceFile,
        include: &Spanned<String>,
    ) -> Result<SourceFile, InputError> {
        let at = Place::of(&include.referenced);
        let error = |message: String| from.error_at(at.line, at.column, message);
        if include.value.trim().is_empty() {
            return Err(error(
                "an empty include; name a file, relative to this one".into(),
            ));
        }
        let path = normalize(
            &from
                .path
                .parent()
                .unwrap_or(Path::new(""))
                .join(&include.value),
        );
        let key = canonical(&path);
        if let Some(first) = self.chain.iter().position(|(p, _)| *p == key) {
            let mut names: Vec<&str> = self.chain[first..]
                .iter()
                .map(|(_, n)| n.as_str())
                .collect();
            let again = self.chain[first].1.clone();
            names.push(&again);
            return Err(error(format!(
                "an include cycle: {}; a file cannot include itself, directly or through others",
                names.join(" → ")
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(format!(
                "cannot read the included file {}: {e}",
                path.display()
            ))
            .with_help("include paths are relative to the file that includes them")
        })?;
        let mut included_from = vec![format!("{}:{}:{}", from.name(), at.line, at.column)];
        included_from.extend(from.included_from.iter().cloned());
        let source = SourceFile {
            path: path.clone(),
            text: Arc::new(text),
            included_from: Arc::new(included_from),
        };
        self.chain.push((key, source.name()));
        if !self.files.contains(&path) {
            self.files.push(path);
        }
        Ok(source)
    }

    pub(super) fn leave(&mut self) {
        self.chain.pop();
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `playbooks/common/../x.yml` as `playbooks/x.yml`, so plans and errors
/// name files as a person would; a leading `..` is kept.
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_without_dot_segments() {
        assert_eq!(
            normalize(Path::new("playbooks/common/../x.yml")),
            PathBuf::from("playbooks/x.yml")
        );
        assert_eq!(
            normalize(Path::new("./a/./b.yml")),
            PathBuf::from("a/b.yml")
        );
        assert_eq!(normalize(Path::new("../b.yml")), PathBuf::from("../b.yml"));
    }
}
