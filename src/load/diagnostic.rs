//! Errors in the files a user wrote, pointing at the place to fix.
//!
//! Every problem found while loading a playbook or an inventory, or while
//! planning from them, becomes an [`InputError`]: the file, line and column
//! in its message (so it reads well in a log or a CI console), and the source
//! line with a caret under the culprit (rendered by miette). The same type
//! carries template errors, whose place is a line inside a YAML scalar.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use serde_saphyr::Location;

/// A file as read from disk: its path as the user named it, and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<String>,
    /// Where this file was included from, innermost first
    /// (`playbooks/windows-kes-to-mde.yml:40:7`); empty for a file named
    /// on the command line. Every error in the file says so.
    pub included_from: Arc<Vec<String>>,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<SourceFile, InputError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            InputError::plain(format!("cannot read {}: {e}", path.display()))
                .with_help("check the path; relative paths are taken from the current directory")
        })?;
        Ok(SourceFile::from_text(path, text))
    }

    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: Arc::new(text.into()),
            included_from: Arc::default(),
        }
    }

    /// The folder relative paths written in this file are taken from.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// `\n  included from a.yml:40:7` for each include on the way here.
    fn chain(&self) -> String {
        self.included_from
            .iter()
            .map(|site| format!("\n  included from {site}"))
            .collect()
    }

    /// An error about this file as a whole, with its include chain.
    pub fn error(&self, message: impl std::fmt::Display) -> InputError {
        InputError::plain(format!("{}: {message}{}", self.name(), self.chain()))
    }

    /// Byte offset of a 1-based line and column (columns count characters).
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let mut offset = 0;
        for (index, text) in self.text.split_inclusive('\n').enumerate() {
            if index + 1 == line {
                let in_line: usize = text
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                return offset + in_line.min(text.trim_end_matches('\n').len());
            }
            offset += text.len();
        }
        self.text.len()
    }

    /// The span to underline for a problem at `offset`: the token there
    /// (a word, a quoted string, a `[...]` or `{...}`), at most to the end
    /// of its line. A one-character value is underlined with its key
    /// (`concurrency: 0`), so there is always a visible caret.
    fn culprit(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let rest = &self.text[offset..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let rest = &rest[..line_end];
        let len = match rest.chars().next() {
            Some(open @ ('[' | '{' | '"' | '\'')) => {
                let close = match open {
                    '[' => ']',
                    '{' => '}',
                    other => other,
                };
                rest[1..].find(close).map(|i| i + 2).unwrap_or(rest.len())
            }
            _ => rest
                .char_indices()
                .find(|(_, c)| c.is_whitespace() || matches!(c, ',' | ']' | '}'))
                .map(|(i, _)| i)
                .unwrap_or(rest.len()),
        };
        if len > 1 {
            return (offset, len);
        }
        let line_start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let before = &self.text[line_start..offset];
        let key_start = line_start + (before.len() - before.trim_start_matches([' ', '-']).len());
        if key_start < offset {
            (key_start, offset - key_start + len.max(1))
        } else {
            (offset, len.max(1).min(self.text.len() - offset).max(1))
        }
    }

    /// An error at a 1-based line and column of this file.
    pub fn error_at(&self, line: usize, column: usize, message: impl Into<String>) -> InputError {
        let (offset, len) = self.culprit(self.offset_of(line, column));
        let message = message.into();
        InputError {
            message: format!("{}:{line}:{column}: {message}{}", self.name(), self.chain()),
            label: short_label(&message),
            help: None,
            code: Some(NamedSource::new(self.name(), Arc::clone(&self.text))),
            span: Some(SourceSpan::new(offset.into(), len)),
            line: Some(line),
            column: Some(column),
        }
    }

    /// An error at a location serde-saphyr recorded for a node of this file.
    pub fn error_at_location(&self, location: &Location, message: impl Into<String>) -> InputError {
        if location.line() == 0 {
            return self.error(message.into());
        }
        self.error_at(
            location.line() as usize,
            location.column() as usize,
            message,
        )
    }

    /// Turns a YAML or type error from serde-saphyr into ours.
    pub fn yaml_error(&self, error: &serde_saphyr::Error) -> InputError {
        let message = first_line_of(&error.to_string());
        match error.location() {
            Some(location) if location.line() > 0 => self
                .error_at_location(&location, message)
                .with_help(help_for(&error.to_string())),
            _ => self.error(message),
        }
    }
}

/// The label under the caret: the message up to its first explanation.
fn short_label(message: &str) -> String {
    let cut = [", expected", "; "]
        .iter()
        .filter_map(|sep| message.find(sep))
        .min()
        .unwrap_or(message.len());
    message[..cut].to_string()
}

/// serde-saphyr's message without the snippet it renders itself (we render ours).
fn first_line_of(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    // Its messages often end in " at line L, column C": we say that already.
    match line.rfind(" at line ") {
        Some(at) => line[..at].to_string(),
        None => line.to_string(),
    }
}

fn help_for(message: &str) -> &'static str {
    if message.contains("unknown field") {
        "remove the key or fix its spelling; docs/reference.md lists every key"
    } else if message.contains("invalid type") {
        "this value has the wrong type for this key"
    } else {
        "fix the YAML at this place"
    }
}

/// A problem with the user's input. Exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// `file:line:column: what is wrong`, or just what is wrong.
    pub message: String,
    label: String,
    help: Option<String>,
    code: Option<NamedSource<Arc<String>>>,
    span: Option<SourceSpan>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl InputError {
    /// An error with no place in a file (a missing file, a bad flag).
    pub fn plain(message: impl Into<String>) -> InputError {
        let message = message.into();
        InputError {
            label: message.clone(),
            message,
            help: None,
            code: None,
            span: None,
            line: None,
            column: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> InputError {
        self.help = Some(help.into());
        self
    }

    /// Puts more context in front of the message (e.g. the host and step).
    pub fn context(mut self, context: impl std::fmt::Display) -> InputError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl miette::Diagnostic for InputError {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.code.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_with_span(Some(self.label.clone()), span),
        )))
    }

    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        None
    }
}

/// Several input errors found in one pass: all are shown, so a user fixes
/// them in one round instead of one run per typo.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", summary(.0))]
pub struct InputErrors(pub Vec<InputError>);

fn summary(errors: &[InputError]) -> String {
    match errors {
        [one] => one.message.clone(),
        many => format!("{} problems found", many.len()),
    }
}

impl miette::Diagnostic for InputErrors {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.0.iter().map(|e| e as &dyn miette::Diagnostic),
        ))
    }
}

impl From<InputError> for InputErrors {
    fn from(error: InputError) -> Self {
        InputErrors(vec![error])
    }
}
