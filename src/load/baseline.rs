//! `baseline:` probes: what a playbook looks at on every host before
//! anything changes and again at the end, to prove nothing else broke.
//!
//! A probe is a read-only step (an action as in a step, `os`, `timeout`,
//! `become`) whose output is parsed into items (`parse: lines`, one item a
//! line; `parse: json`, one item an element, identified by its `key`
//! field). `expect:` says, as glob patterns over an item's text, what may
//! appear, disappear or change; anything else is a regression, which
//! `on_regression: fail` (the default) turns into a failed verify.
//!
//! Probes are converted into [`Step`]s by the same code as steps, so their
//! templates, places and `os` rules are those of steps; this module adds
//! only what makes a probe a probe. An `include:` of a file of probes may
//! carry its own `expect:`, added to every probe of that file: shared
//! probes live in `playbooks/common/`, and each playbook says what its
//! products change.

use globset::{GlobBuilder, GlobMatcher};
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::convert::{Loader, Scope};
use super::diagnostic::InputError;
use super::playbook::{Place, Step, Vars};
use super::playbook_doc::{OneOrMany, ScriptDoc, StepDoc};
use super::values::HumanDuration;
use crate::transport::Os;

/// The name of the probe the runner adds for the inventory's `must_reach`.
pub const MUST_REACH: &str = "must_reach";

/// How long a probe may take when it does not say: probes read, they do
/// not wait for anything.
pub const DEFAULT_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    /// The probe as a step: its action, `os`, `timeout`, `become`, place.
    pub step: Step,
    pub parse: ProbeFormat,
    /// With `parse: json`: the field naming an item.
    pub key: Option<String>,
    pub expect: Expect,
    pub on_regression: OnRegression,
}

/// What a probe's output is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeFormat {
    /// One item per non-empty line.
    #[default]
    Lines,
    /// A JSON array (or one object): one item per element.
    Json,
}

/// What an unexpected difference does to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnRegression {
    /// The host's verify fails and the host is rolled back.
    #[default]
    Fail,
    /// The host succeeds; the report flags the difference.
    Warn,
}

/// The differences a probe expects, as patterns over an item's text.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub appear: Vec<Pattern>,
    pub disappear: Vec<Pattern>,
    pub change: Vec<Pattern>,
}

impl Expect {
    fn extend(&mut self, other: &Expect) {
        self.appear.extend(other.appear.iter().cloned());
        self.disappear.extend(other.disappear.iter().cloned());
        self.change.extend(other.change.iter().cloned());
    }
}

/// A glob over an item's whole text, case-insensitive (Windows names are).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        GlobBuilder::new(text)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map(|glob| Pattern {
                text: text.to_string(),
                matcher: glob.compile_matcher(),
            })
            .map_err(|e| format!("`{text}` is not a pattern: {}", e.kind()))
    }

    pub fn matches(&self, item: &str) -> bool {
        self.matcher.is_match(item)
    }
}

// ---- as written ----

/// A probe, or `include:` of a file of probes (then only `vars` and
/// `expect` may be beside it).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = one_action_or_include)]
pub(super) struct ProbeDoc {
    /// A file of probes (a YAML list) to insert here, relative to this file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    include: Option<Spanned<String>>,
    /// With `include`: variables bound for the included probes only.
    #[serde(default)]
    #[schemars(with = "Option<Vars>")]
    vars: Option<Spanned<Vars>>,
    /// Names the probe in reports; unique in the playbook.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    name: Option<Spanned<String>>,
    /// A command in the host's shell (`sh`, or PowerShell on Windows).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    run: Option<Spanned<String>>,
    /// A POSIX shell script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    sh: Option<Spanned<String>>,
    /// A PowerShell script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    powershell: Option<Spanned<String>>,
    /// A cmd.exe command.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    cmd: Option<Spanned<String>>,
    /// A file beside this one, uploaded, run with `args`, and removed.
    #[serde(default)]
    script: Option<ScriptDoc>,
    /// Only on hosts of these OSes.
    #[serde(default)]
    os: Option<OneOrMany<Os>>,
    /// The longest the probe may take. Default: 2m.
    #[serde(default)]
    #[schemars(with = "Option<HumanDuration>")]
    timeout: Option<Spanned<HumanDuration>>,
    /// Run as the inventory's `become` user (sudo). Default: the playbook's.
    #[serde(default, rename = "become")]
    r#become: Option<bool>,
    /// `lines` (one item a line) or `json` (one item an element). Default: lines.
    #[serde(default)]
    parse: Option<ProbeFormat>,
    /// With `parse: json`: the field that identifies an item, so that an item whose other fields differ has changed (not disappeared and appeared).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    key: Option<Spanned<String>>,
    /// What may differ: glob patterns (case-insensitive) over an item's text. With `include`: added to every included probe.
    #[serde(default)]
    expect: Option<ExpectDoc>,
    /// `fail` (the host's verify fails and it is rolled back) or `warn` (it succeeds, flagged). Default: fail.
    #[serde(default)]
    on_regression: Option<OnRegression>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectDoc {
    /// Items that may appear (the new product's services and ports).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    appear: Vec<Spanned<String>>,
    /// Items that may disappear (the old product's).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    disappear: Vec<Spanned<String>>,
    /// Items that may change (matched before or after).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    change: Vec<Spanned<String>>,
}

const PROBE_ACTIONS: [&str; 5] = ["run", "sh", "powershell", "cmd", "script"];

/// A probe has exactly one action, or is an include with `vars` and
/// `expect` at most beside it.
fn one_action_or_include(schema: &mut Schema) {
    let mut branches: Vec<serde_json::Value> = PROBE_ACTIONS
        .iter()
        .map(|a| {
            serde_json::json!({
                "required": [a, "name"],
                "properties": { *a: { "not": { "type": "null" } } },
                "not": { "required": ["include"] }
            })
        })
        .collect();
    branches.push(serde_json::json!({
        "required": ["include"],
        "propertyNames": { "enum": ["include", "vars", "expect"] }
    }));
    schema.insert("oneOf".into(), branches.into());
}

impl Loader {
    /// Converts a `baseline:` list, includes expanded.
    pub(super) fn probes(&mut self, scope: &Scope, docs: Vec<Spanned<ProbeDoc>>) -> Vec<Probe> {
        let mut probes = Vec::new();
        for doc in docs {
            let at = doc.referenced;
            let mut d = doc.value;
            if let Some(include) = d.include.take() {
                let others = d.probe_keys();
                if !others.is_empty() {
                    self.errors.push(scope.source.error_at_location(
                        &at,
                        format!(
                            "an include of probes takes only `vars` and `expect` beside it, not {}",
                            others.join(", ")
                        ),
                    ));
                    continue;
                }
                let extra = self.expect(scope, d.expect.take().unwrap_or_default());
                let mut included = self.included(scope, &include, d.vars.take(), Self::probes);
                for probe in &mut included {
                    probe.expect.extend(&extra);
                }
                probes.extend(included);
                continue;
            }
            if let Some(probe) = self.probe(scope, at, d) {
                probes.push(probe);
            }
        }
        probes
    }

    fn probe(&mut self, scope: &Scope, at: serde_saphyr::Location, d: ProbeDoc) -> Option<Probe> {
        let source = &scope.source;
        if let Some(vars) = &d.vars {
            self.errors.push(source.error_at_location(
                &vars.referenced,
                "`vars` on a probe binds nothing; it goes with `include:` (or at the top of the playbook)",
            ));
        }
        let Some(name) = d.name else {
            self.errors.push(source.error_at_location(
                &at,
                "a probe needs a `name` (reports say what changed by it)",
            ));
            return None;
        };
        if name.value == MUST_REACH {
            self.errors.push(source.error_at_location(
                &name.referenced,
                "`must_reach` is the probe the inventory's `must_reach:` makes; choose another name",
            ));
        }
        let parse = d.parse.unwrap_or_default();
        let key = match (d.key, parse) {
            (Some(key), ProbeFormat::Lines) => {
                self.errors.push(source.error_at_location(
                    &key.referenced,
                    "`key` names a field of a JSON item; it goes with `parse: json` (a line is its own key)",
                ));
                None
            }
            (Some(key), ProbeFormat::Json) if key.value.trim().is_empty() => {
                self.errors.push(
                    source.error_at_location(&key.referenced, "an empty `key`; name a field"),
                );
                None
            }
            (key, _) => key.map(|k| k.value),
        };
        let expect = self.expect(scope, d.expect.unwrap_or_default());
        let step_doc = StepDoc {
            name: Some(name.value.clone()),
            run: d.run,
            sh: d.sh,
            powershell: d.powershell,
            cmd: d.cmd,
            script: d.script,
            os: d.os,
            timeout: d
                .timeout
                .or_else(|| Some(Spanned::new(HumanDuration(DEFAULT_PROBE_TIMEOUT), at, at))),
            r#become: d.r#become,
            check_safe: true,
            ..StepDoc::default()
        };
        let step = self.step(
            scope,
            Spanned {
                value: step_doc,
                referenced: at,
                defined: at,
            },
        )?;
        Some(Probe {
            name: name.value,
            step,
            parse,
            key,
            expect,
            on_regression: d.on_regression.unwrap_or_default(),
        })
    }

    fn expect(&mut self, scope: &Scope, doc: ExpectDoc) -> Expect {
        let mut compile = |patterns: Vec<Spanned<String>>| -> Vec<Pattern> {
            patterns
                .into_iter()
                .filter_map(|p| match Pattern::new(&p.value) {
                    Ok(pattern) => Some(pattern),
                    Err(message) => {
                        self.errors
                            .push(scope.source.error_at_location(&p.referenced, message));
                        None
                    }
                })
                .collect()
        };
        Expect {
            appear: compile(doc.appear),
            disappear: compile(doc.disappear),
            change: compile(doc.change),
        }
    }
}

impl ProbeDoc {
    /// The keys written besides `include`, `vars` and `expect`.
    fn probe_keys(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("run", self.run.is_some()),
            ("sh", self.sh.is_some()),
            ("powershell", self.powershell.is_some()),
            ("cmd", self.cmd.is_some()),
            ("script", self.script.is_some()),
            ("os", self.os.is_some()),
            ("timeout", self.timeout.is_some()),
            ("become", self.r#become.is_some()),
            ("parse", self.parse.is_some()),
            ("key", self.key.is_some()),
            ("on_regression", self.on_regression.is_some()),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(k, _)| k)
        .collect()
    }
}

/// Two probes of one name would make the report ambiguous.
pub(super) fn check_names(probes: &[Probe], errors: &mut Vec<InputError>) {
    for (i, probe) in probes.iter().enumerate() {
        if let Some(first) = probes[..i].iter().find(|p| p.name == probe.name) {
            let Place { line, column } = probe.step.at;
            errors.push(probe.step.source.error_at(
                line,
                column,
                format!(
                    "a second probe named `{}` (the first is at {}:{}); probe names must differ",
                    probe.name,
                    first.step.source.name(),
                    first.step.at.line
                ),
            ));
        }
    }
}
