//! Playbooks: what to do on every host, in phases of steps.
//!
//! The YAML is read into the `*Doc` types of [`super::playbook_doc`] (every
//! struct denies unknown keys, so a typo is an error with its place), then
//! checked and turned into the [`Playbook`] model the planner uses. Template
//! text keeps the place it was written ([`Template::at`]) so that a template
//! error, found later for some host, still points into this file.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::diagnostic::{InputError, InputErrors, SourceFile};
use super::playbook_doc::{PlaybookDoc, StepDoc};
use super::values::{HumanDuration, Pause, Size};
use crate::transport::Os;

/// A place in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Place {
    pub line: usize,
    pub column: usize,
}

impl Place {
    pub(crate) fn of(location: &serde_saphyr::Location) -> Place {
        Place {
            line: location.line() as usize,
            column: location.column() as usize,
        }
    }
}

/// Template text from the playbook, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub text: String,
    pub at: Place,
}

impl Template {
    fn of(spanned: Spanned<String>) -> Template {
        Template {
            at: Place::of(&spanned.referenced),
            text: spanned.value,
        }
    }
}

/// Playbook variables, in the order written.
pub type Vars = IndexMap<String, serde_json::Value>;

#[derive(Debug, Clone)]
pub struct Playbook {
    pub source: SourceFile,
    pub name: String,
    pub description: Option<String>,
    /// The OSes this playbook applies to; `None`: all.
    pub os: Option<Vec<Os>>,
    pub vars: Vars,
    pub waves: Option<Vec<Size>>,
    /// Where `waves` is written, for "cannot cover the client" errors.
    pub waves_at: Place,
    pub pause_between_waves: Pause,
    pub failure_budget: Option<Size>,
    pub concurrency: Option<usize>,
    pub on_failure: Vec<Step>,
    pub phases: Vec<Phase>,
    /// The top level's `become` (steps already carry what applies to them).
    pub r#become: bool,
}

impl Playbook {
    /// The folder `script` and `upload` sources are taken from.
    pub fn dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub os: Option<Vec<Os>>,
    pub when: Option<Template>,
    pub timeout: Option<HumanDuration>,
    pub retries: u32,
    pub retry_delay: HumanDuration,
    pub until: Option<Template>,
    pub ok_codes: Vec<i32>,
    pub reboot_codes: Vec<i32>,
    pub capture: Option<Capture>,
    pub rollback: Vec<Step>,
    pub check_safe: bool,
    pub sensitive: bool,
    pub marks: Option<Mark>,
    /// Runs as the inventory's become user: the step's own `become`, else
    /// its phase's, else the playbook's (rollback steps: their step's;
    /// `on_failure`: the playbook's).
    pub r#become: bool,
    pub at: Place,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The host's default shell.
    Run(Template),
    Sh(Template),
    PowerShell(Template),
    Cmd(Template),
    /// Upload a script from the controller, run it with arguments, remove it.
    Script {
        src: Template,
        args: Vec<Template>,
    },
    Upload {
        src: Template,
        dest: Template,
        mode: Option<u32>,
    },
    Reboot {
        timeout: Option<HumanDuration>,
    },
    Wait(HumanDuration),
}

impl Action {
    pub fn keyword(&self) -> &'static str {
        match self {
            Action::Run(_) => "run",
            Action::Sh(_) => "sh",
            Action::PowerShell(_) => "powershell",
            Action::Cmd(_) => "cmd",
            Action::Script { .. } => "script",
            Action::Upload { .. } => "upload",
            Action::Reboot { .. } => "reboot",
            Action::Wait(_) => "wait",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub name: String,
    pub parse: CaptureFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    Json,
    Lines,
    Text,
    Ini,
}

/// What a step does to the endpoint's protection, for the protection gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// After this step the old product no longer protects the host.
    ProtectionOff,
    /// After this step the new product protects the host.
    ProtectionOn,
}

/// Reads and checks a playbook file.
pub fn load_playbook(path: &Path) -> Result<Playbook, InputErrors> {
    let source = SourceFile::read(path)?;
    parse_playbook(source)
}

/// Checks a playbook already read into memory.
pub fn parse_playbook(source: SourceFile) -> Result<Playbook, InputErrors> {
    let doc: PlaybookDoc = super::parse_yaml(&source)?;
    let mut errors = Vec::new();
    let top_become = doc.r#become.unwrap_or(false);
    let convert = |docs: Vec<Spanned<StepDoc>>, inherited: bool, errors: &mut Vec<InputError>| {
        docs.into_iter()
            .filter_map(|d| convert_step(&source, d, inherited, errors))
            .collect::<Vec<_>>()
    };

    let on_failure = convert(doc.on_failure, top_become, &mut errors);
    if doc.phases.value.is_empty() {
        errors.push(source.error_at_location(
            &doc.phases.referenced,
            "a playbook needs at least one phase",
        ));
    }
    let mut phases: Vec<Phase> = Vec::new();
    for phase in doc.phases.value {
        if phases.iter().any(|p| p.name == phase.name.value) {
            errors.push(source.error_at_location(
                &phase.name.referenced,
                format!(
                    "a second phase named `{}`; phase names must differ",
                    phase.name.value
                ),
            ));
        }
        let steps = convert(
            phase.steps,
            phase.r#become.unwrap_or(top_become),
            &mut errors,
        );
        phases.push(Phase {
            name: phase.name.value,
            steps,
        });
    }
    check_captures(&source, &phases, &mut errors);
    if let Some(waves) = &doc.waves {
        check_wave_list(&source, waves, &mut errors);
    }
    let concurrency = doc.concurrency.and_then(|c| {
        if c.value == 0 {
            errors.push(source.error_at_location(
                &c.referenced,
                "concurrency 0 would never start a host; write 1 or more",
            ));
            None
        } else {
            Some(c.value as usize)
        }
    });

    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    Ok(Playbook {
        name: doc.name,
        description: doc.description,
        os: doc.os.map(|o| o.0),
        vars: doc.vars,
        waves_at: doc
            .waves
            .as_ref()
            .map(|w| Place::of(&w.referenced))
            .unwrap_or_default(),
        waves: doc.waves.map(|w| w.value),
        pause_between_waves: doc.pause_between_waves.unwrap_or_default(),
        failure_budget: doc.failure_budget,
        concurrency,
        on_failure,
        phases,
        r#become: top_become,
        source,
    })
}

/// A wave list must be non-empty and have no empty wave.
pub(crate) fn check_wave_list(
    source: &SourceFile,
    waves: &Spanned<Vec<Size>>,
    errors: &mut Vec<InputError>,
) {
    if waves.value.is_empty() {
        errors.push(source.error_at_location(
            &waves.referenced,
            "an empty wave list; write e.g. [1, \"10%\", \"100%\"]",
        ));
    }
    if waves
        .value
        .iter()
        .any(|w| matches!(w, Size::Count(0)) || matches!(w, Size::Percent(p) if *p == 0.0))
    {
        errors.push(source.error_at_location(
            &waves.referenced,
            "a wave of size 0 would never run a host; remove it",
        ));
    }
}

fn convert_step(
    source: &SourceFile,
    doc: Spanned<StepDoc>,
    inherited_become: bool,
    errors: &mut Vec<InputError>,
) -> Option<Step> {
    let at = Place::of(&doc.referenced);
    let d = doc.value;
    let r#become = d.r#become.unwrap_or(inherited_become);
    let mut actions: Vec<Action> = Vec::new();
    if let Some(t) = d.run {
        actions.push(Action::Run(Template::of(t)));
    }
    if let Some(t) = d.sh {
        actions.push(Action::Sh(Template::of(t)));
    }
    if let Some(t) = d.powershell {
        actions.push(Action::PowerShell(Template::of(t)));
    }
    if let Some(t) = d.cmd {
        actions.push(Action::Cmd(Template::of(t)));
    }
    if let Some(s) = d.script {
        actions.push(Action::Script {
            src: Template::of(s.src),
            args: s.args.into_iter().map(Template::of).collect(),
        });
    }
    if let Some(u) = d.upload {
        let mode = match u.mode {
            None => None,
            Some(m) => match u32::from_str_radix(m.value.trim_start_matches("0o"), 8) {
                Ok(mode) => Some(mode),
                Err(_) => {
                    errors.push(source.error_at_location(
                        &m.referenced,
                        format!(
                            "`{}` is not a file mode; write it in octal, e.g. \"0644\"",
                            m.value
                        ),
                    ));
                    None
                }
            },
        };
        actions.push(Action::Upload {
            src: Template::of(u.src),
            dest: Template::of(u.dest),
            mode,
        });
    }
    if let Some(r) = d.reboot {
        actions.push(Action::Reboot { timeout: r.timeout });
    }
    if let Some(w) = d.wait {
        actions.push(Action::Wait(w));
    }
    let label = d
        .name
        .as_deref()
        .map(|n| format!("step `{n}`"))
        .unwrap_or_else(|| "this step".into());
    let action = match actions.len() {
        1 => actions.pop().expect("one action"),
        0 => {
            errors.push(
                source
                    .error_at(at.line, at.column, format!("{label} has no action"))
                    .with_help(
                        "give it exactly one of: run, sh, powershell, cmd, script, upload, reboot, wait",
                    ),
            );
            return None;
        }
        _ => {
            let names: Vec<_> = actions.iter().map(Action::keyword).collect();
            errors.push(
                source
                    .error_at(
                        at.line,
                        at.column,
                        format!(
                            "{label} has {} actions ({}); a step does one thing",
                            names.len(),
                            names.join(", ")
                        ),
                    )
                    .with_help("split it into one step per action"),
            );
            return None;
        }
    };
    let capture = d.capture.and_then(|c| {
        if is_identifier(&c.name.value) {
            Some(Capture {
                name: c.name.value,
                parse: c.parse,
            })
        } else {
            errors.push(source.error_at_location(
                &c.name.referenced,
                format!(
                    "`{}` cannot be a variable name; use letters, digits and _ (not first a digit)",
                    c.name.value
                ),
            ));
            None
        }
    });
    let rollback = d
        .rollback
        .into_iter()
        .filter_map(|r| convert_step(source, r, r#become, errors))
        .collect();
    Some(Step {
        name: d.name.unwrap_or_else(|| default_name(&action)),
        action,
        os: d.os.map(|o| o.0),
        when: d.when.map(Template::of),
        timeout: d.timeout,
        retries: d.retries.unwrap_or(0),
        retry_delay: d
            .retry_delay
            .unwrap_or(HumanDuration(std::time::Duration::from_secs(5))),
        until: d.until.map(Template::of),
        ok_codes: d.ok_codes.unwrap_or_else(|| vec![0]),
        reboot_codes: d.reboot_codes.unwrap_or_default(),
        capture,
        rollback,
        check_safe: d.check_safe,
        sensitive: d.sensitive,
        marks: d.marks,
        r#become,
        at,
    })
}

/// A step without a name is named after what it does, so the plan and the
/// report still say something a person recognises.
fn default_name(action: &Action) -> String {
    let text = match action {
        Action::Run(t) | Action::Sh(t) | Action::PowerShell(t) | Action::Cmd(t) => {
            t.text.lines().next().unwrap_or("").trim().to_string()
        }
        Action::Script { src, .. } => src.text.clone(),
        Action::Upload { src, dest, .. } => format!("{} -> {}", src.text, dest.text),
        Action::Reboot { .. } => String::new(),
        Action::Wait(d) => d.to_string(),
    };
    let mut name = format!("{} {}", action.keyword(), text).trim().to_string();
    if name.chars().count() > 60 {
        name = name.chars().take(57).collect::<String>() + "...";
    }
    name
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Two steps capturing into the same name would make later templates
/// ambiguous; refuse it up front.
fn check_captures(source: &SourceFile, phases: &[Phase], errors: &mut Vec<InputError>) {
    let mut seen: IndexMap<&str, Place> = IndexMap::new();
    for step in phases.iter().flat_map(|p| &p.steps) {
        if let Some(capture) = &step.capture {
            if let Some(first) = seen.get(capture.name.as_str()) {
                errors.push(source.error_at(
                    step.at.line,
                    step.at.column,
                    format!(
                        "`{}` is already captured by the step at line {}; choose another name",
                        capture.name, first.line
                    ),
                ));
            } else {
                seen.insert(&capture.name, step.at);
            }
        }
    }
}
