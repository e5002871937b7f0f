//! Syntax checks of rendered scripts: every PowerShell step is parsed with a
//! real PowerShell grammar (tree-sitter-powershell), every `sh` step with a
//! bash grammar (tree-sitter-bash), for every host, by `orchestrate validate`.
//!
//! PowerShell cannot run on the controller, and a stray brace in a script
//! would otherwise be found on the canary, half-way through a migration.
//! The check reports the host, the step and the line inside the script, and
//! where that line is in the playbook. Steps rendered only at run time (they
//! read captured values) cannot be checked here.

use std::collections::{BTreeMap, HashMap};

use tree_sitter::{Node, Parser};

use super::templates::place_in_file;
use super::{ActionKind, Plan, PlannedStep};
use crate::load::{Action, InputError};
use crate::transport::{Os, Script};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Language {
    PowerShell,
    Shell,
}

impl Language {
    fn name(self) -> &'static str {
        match self {
            Language::PowerShell => "PowerShell",
            Language::Shell => "shell",
        }
    }
}

fn language_of(script: &Script, os: Os) -> Option<Language> {
    match script {
        Script::PowerShell(_) => Some(Language::PowerShell),
        Script::Sh(_) => Some(Language::Shell),
        Script::Default(_) if os == Os::Windows => Some(Language::PowerShell),
        Script::Default(_) => Some(Language::Shell),
        Script::Cmd(_) => None,
    }
}

/// A syntax error inside a script: 1-based line and column in the script.
#[derive(Clone)]
struct ScriptError {
    line: usize,
    column: usize,
    what: String,
}

struct Parsers {
    powershell: Parser,
    shell: Parser,
}

impl Parsers {
    fn new() -> Parsers {
        let mut powershell = Parser::new();
        let mut shell = Parser::new();
        // The grammars are compiled in; setting them cannot fail unless the
        // tree-sitter ABI differs, which the build would have caught.
        powershell
            .set_language(&tree_sitter_powershell::LANGUAGE.into())
            .expect("the PowerShell grammar loads");
        shell
            .set_language(&tree_sitter_bash::LANGUAGE.into())
            .expect("the bash grammar loads");
        Parsers { powershell, shell }
    }

    fn check(&mut self, language: Language, text: &str) -> Option<ScriptError> {
        let parser = match language {
            Language::PowerShell => &mut self.powershell,
            Language::Shell => &mut self.shell,
        };
        let tree = parser.parse(text, None)?;
        let root = tree.root_node();
        if !root.has_error() {
            return None;
        }
        let node = first_error(root).unwrap_or(root);
        let mut position = node.start_position();
        let what = if node.is_missing() {
            // Point at what was left open, not at the end of the script.
            match node.parent() {
                Some(open) => {
                    position = open.start_position();
                    let first = text
                        .get(open.start_byte()..open.end_byte())
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("");
                    format!("`{}` is missing to close `{}`", node.kind(), first.trim())
                }
                None => format!("`{}` is missing", node.kind()),
            }
        } else {
            let snippet: String = text
                .get(node.start_byte()..node.end_byte())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(40)
                .collect();
            format!("cannot parse `{}`", snippet.trim())
        };
        Some(ScriptError {
            line: position.row + 1,
            column: position.column + 1,
            what,
        })
    }
}

/// The most specific error: a MISSING node if there is one, else the
/// innermost ERROR node, in document order.
fn first_error(node: Node<'_>) -> Option<Node<'_>> {
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        if child.is_missing() {
            return Some(child);
        }
        if child.has_error() {
            return first_error(child).or(Some(child));
        }
    }
    (node.is_error() || node.is_missing()).then_some(node)
}

/// Where an error is in the playbook, what it says, and the hosts it hits.
type Finding = (
    crate::load::SourceFile,
    crate::load::Place,
    String,
    Vec<String>,
);

/// Checks every rendered script of the plan; one error per step and
/// problem, naming the first host and how many more it hits.
pub fn check_scripts(plan: &Plan) -> Vec<InputError> {
    let mut parsers = Parsers::new();
    // Most hosts render a step to the same text: each distinct script is
    // parsed once (at 10,000 hosts, parsing every copy took 24 s).
    let mut parsed: HashMap<(Language, &str), Option<ScriptError>> = HashMap::new();
    // (step key, script line, message) -> (place in the playbook, message, hosts)
    let mut found: BTreeMap<(String, usize, String), Finding> = BTreeMap::new();
    for host in plan.hosts() {
        let mut steps: Vec<&PlannedStep> = Vec::new();
        for step in host.steps.iter().chain(&host.on_failure) {
            collect(step, &mut steps);
        }
        for step in steps {
            let Some(ActionKind::Shell(script)) = step.action.as_ref().map(|a| &a.kind) else {
                continue;
            };
            let Some(language) = language_of(script, host.os) else {
                continue;
            };
            let verdict = parsed
                .entry((language, script.text()))
                .or_insert_with(|| parsers.check(language, script.text()));
            let Some(error) = verdict.clone() else {
                continue;
            };
            let template = match &step.def.step.action {
                Action::Run(t) | Action::Sh(t) | Action::PowerShell(t) | Action::Cmd(t) => t,
                _ => continue,
            };
            let key = (step.def.key.clone(), error.line, error.what.clone());
            let entry = found.entry(key).or_insert_with(|| {
                let source = &step.def.step.source;
                let at = place_in_file(source, template.at, error.line, error.column.saturating_sub(1));
                let line_text = script.text().lines().nth(error.line - 1).unwrap_or("").trim().to_string();
                let message = format!(
                    "step `{}` ({}): {} syntax error at line {}, column {} of the script: {} (the line reads: {})",
                    step.name(),
                    step.phase(),
                    language.name(),
                    error.line,
                    error.column,
                    error.what,
                    line_text
                );
                (source.clone(), at, message, Vec::new())
            });
            entry.3.push(host.name.clone());
        }
    }
    // The snippet and the line quoted come from the rendered script: a
    // secret in them is masked like anywhere else.
    let redactor = plan.redactor();
    found
        .into_values()
        .map(|(source, at, message, hosts)| {
            let message = redactor.redact(&message);
            let who = match hosts.len() {
                1 => format!("host {}", hosts[0]),
                n => format!("host {} (and {} more)", hosts[0], n - 1),
            };
            source
                .error_at(at.line.max(1), at.column.max(1), format!("{who}, {message}"))
                .with_help("fix the script in the playbook; `validate` parses every rendered PowerShell and shell step")
        })
        .collect()
}

fn collect<'a>(step: &'a PlannedStep, into: &mut Vec<&'a PlannedStep>) {
    into.push(step);
    for r in &step.rollback {
        collect(r, into);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_scripts_pass() {
        let mut p = Parsers::new();
        assert!(
            p.check(
                Language::PowerShell,
                "Get-Item 'a' | Where-Object { $_.x -eq 1 }\n$h = @{ a = 1 }"
            )
            .is_none()
        );
        assert!(
            p.check(
                Language::PowerShell,
                "Add-MpPreference -ExclusionPath 'D:\\it''s','C:\\x'"
            )
            .is_none()
        );
        assert!(
            p.check(Language::Shell, "if [ -f x ]; then echo 'it'\\''s'; fi")
                .is_none()
        );
    }

    #[test]
    fn errors_have_a_line_inside_the_script() {
        let mut p = Parsers::new();
        let e = p
            .check(
                Language::PowerShell,
                "Write-Output 1\nif ($x { Write-Output 2 }\n",
            )
            .unwrap();
        assert!(e.line >= 1, "{}", e.what);
        let e = p
            .check(
                Language::Shell,
                "echo ok\nif true; then\n  echo unfinished\n",
            )
            .unwrap();
        assert!(e.line >= 2, "line {} {}", e.line, e.what);
    }
}
