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

use super::convert::{Loader, Scope};
use super::diagnostic::{InputError, InputErrors, SourceFile};
use super::include::Includes;
use super::playbook_doc::PlaybookDoc;
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
    pub(super) fn of(spanned: Spanned<String>) -> Template {
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
    /// Every file the playbook was read from: itself, then each included
    /// file once, in the order first read.
    pub files: Vec<PathBuf>,
    /// The top level's `become` (steps already carry what applies to them).
    pub r#become: bool,
    /// `baseline:` probes, includes expanded, in order.
    pub baseline: Vec<super::baseline::Probe>,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub steps: Vec<Step>,
    /// Where the phase's name is written.
    pub at: Place,
    pub source: SourceFile,
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
    /// `on_failure`: the playbook's; included steps: the including scope's).
    pub r#become: bool,
    /// Where the step is written, in [`Step::source`].
    pub at: Place,
    /// The file the step is written in: the playbook, or an included file
    /// (its templates' places are in it; `script:` and `upload:` sources
    /// are beside it).
    pub source: SourceFile,
    /// Variables bound by the `include:`s that brought the step in; they
    /// win over every other level, for this step only.
    pub include_vars: Vars,
}

impl Step {
    /// The folder `script` and `upload` sources are taken from: the one of
    /// the file the step is written in.
    pub fn dir(&self) -> PathBuf {
        self.source.dir()
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    Json,
    Lines,
    Text,
    Ini,
}

/// What a step does to the endpoint's protection, for the protection gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// After this step the old product no longer protects the host.
    ProtectionOff,
    /// After this step the new product protects the host.
    ProtectionOn,
    /// On a rollback or `on_failure` step: it puts back a product that no
    /// longer gets updates (Kaspersky for US customers since 29 September
    /// 2024). A host whose rollback ran such a step to success ends
    /// `rolled_back_to_unsupported_product`, not `failed`.
    RestoresUnsupportedProduct,
}

/// Reads and checks a playbook file.
pub fn load_playbook(path: &Path) -> Result<Playbook, InputErrors> {
    let source = SourceFile::read(path)?;
    parse_playbook(source)
}

/// Checks a playbook already read into memory.
pub fn parse_playbook(source: SourceFile) -> Result<Playbook, InputErrors> {
    let doc: PlaybookDoc = super::parse_yaml(&source)?;
    let mut loader = Loader {
        includes: Includes::new(&source),
        errors: Vec::new(),
    };
    let top_become = doc.r#become.unwrap_or(false);
    let root = Scope {
        source: source.clone(),
        vars: Vars::new(),
        r#become: top_become,
    };
    let on_failure = loader.steps(&root, doc.on_failure);
    if doc.phases.value.is_empty() {
        loader.errors.push(source.error_at_location(
            &doc.phases.referenced,
            "a playbook needs at least one phase",
        ));
    }
    let phases = loader.phases(&root, doc.phases.value);
    let baseline = loader.probes(&root, doc.baseline);
    let Loader {
        includes,
        mut errors,
    } = loader;
    for (i, phase) in phases.iter().enumerate() {
        if phases[..i].iter().any(|p| p.name == phase.name) {
            errors.push(phase.source.error_at(
                phase.at.line,
                phase.at.column,
                format!(
                    "a second phase named `{}`; phase names must differ",
                    phase.name
                ),
            ));
        }
    }
    check_captures(&phases, &mut errors);
    super::baseline::check_names(&baseline, &mut errors);
    check_marks(&phases, &mut errors);
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
        files: includes.files,
        r#become: top_become,
        baseline,
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

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `restores_unsupported_product` says what undoing a step puts back, so
/// it belongs on rollback and `on_failure` steps only.
fn check_marks(phases: &[Phase], errors: &mut Vec<InputError>) {
    for step in phases.iter().flat_map(|p| &p.steps) {
        if step.marks == Some(Mark::RestoresUnsupportedProduct) {
            errors.push(step.source.error_at(
                step.at.line,
                step.at.column,
                format!(
                    "step `{}`: `marks: restores_unsupported_product` goes on a rollback or on_failure step (the one that puts the old product back), not on a step of a phase",
                    step.name
                ),
            ));
        }
    }
}

/// Two steps capturing into the same name would make later templates
/// ambiguous; refuse it up front.
fn check_captures(phases: &[Phase], errors: &mut Vec<InputError>) {
    let mut seen: IndexMap<&str, &Step> = IndexMap::new();
    for step in phases.iter().flat_map(|p| &p.steps) {
        if let Some(capture) = &step.capture {
            if let Some(first) = seen.get(capture.name.as_str()) {
                let place = if first.source.path == step.source.path {
                    format!("line {}", first.at.line)
                } else {
                    format!("{}:{}", first.source.name(), first.at.line)
                };
                errors.push(step.source.error_at(
                    step.at.line,
                    step.at.column,
                    format!(
                        "`{}` is already captured by the step at {place}; choose another name",
                        capture.name
                    ),
                ));
            } else {
                seen.insert(&capture.name, step);
            }
        }
    }
}
