//! Turning the playbook as written into the model, includes expanded.
//!
//! Phases and steps are converted where they are written, in a [`Scope`]:
//! the file they are in and the variables its `include:` bound. An include
//! is replaced by the converted contents of its file, in that file's scope,
//! so each step remembers its own file (for errors, for `script:` and
//! `upload:` sources beside it, and for the plan's `origin`), and nothing
//! later needs to know that includes exist.

use serde_saphyr::Spanned;

use super::diagnostic::{InputError, SourceFile};
use super::include::Includes;
use super::playbook::{Action, Capture, Phase, Place, Step, Template, Vars, is_identifier};
use super::playbook_doc::{ACTIONS, PhaseDoc, StepDoc};
use super::values::HumanDuration;

/// Where phases and steps are being converted.
#[derive(Clone)]
pub(super) struct Scope {
    pub(super) source: SourceFile,
    /// Bound by the includes on the way here, the innermost winning.
    pub(super) vars: Vars,
    /// `become` for steps that do not say: the nearest phase's, step's (for
    /// its rollback) or the playbook's.
    pub(super) r#become: bool,
}

pub(super) struct Loader {
    pub(super) includes: Includes,
    pub(super) errors: Vec<InputError>,
}

impl Loader {
    pub(super) fn phases(&mut self, scope: &Scope, docs: Vec<Spanned<PhaseDoc>>) -> Vec<Phase> {
        let mut phases = Vec::new();
        for doc in docs {
            let at = doc.referenced;
            let d = doc.value;
            if let Some(include) = &d.include {
                let mut others = Vec::new();
                if d.name.is_some() {
                    others.push("name");
                }
                if d.steps.is_some() {
                    others.push("steps");
                }
                if d.r#become.is_some() {
                    others.push("become");
                }
                if !others.is_empty() {
                    self.errors.push(scope.source.error_at_location(
                        &at,
                        format!(
                            "an include of phases takes only `vars` beside it, not {}",
                            others.join(", ")
                        ),
                    ));
                    continue;
                }
                phases.extend(self.included(scope, include, d.vars, Self::phases));
                continue;
            }
            if let Some(vars) = &d.vars {
                self.errors.push(scope.source.error_at_location(
                    &vars.referenced,
                    "`vars` on a phase binds nothing; it goes with `include:` (or at the top of the playbook)",
                ));
            }
            let Some(name) = d.name else {
                self.errors.push(
                    scope
                        .source
                        .error_at_location(&at, "a phase needs a `name` (or an `include:`)"),
                );
                continue;
            };
            let phase_scope = Scope {
                r#become: d.r#become.unwrap_or(scope.r#become),
                ..scope.clone()
            };
            let steps = self.steps(&phase_scope, d.steps.unwrap_or_default());
            phases.push(Phase {
                name: name.value,
                at: Place::of(&name.referenced),
                source: scope.source.clone(),
                steps,
            });
        }
        phases
    }

    pub(super) fn steps(&mut self, scope: &Scope, docs: Vec<Spanned<StepDoc>>) -> Vec<Step> {
        let mut steps = Vec::new();
        for mut doc in docs {
            if let Some(include) = doc.value.include.take() {
                let others = doc.value.step_keys();
                if !others.is_empty() {
                    self.errors.push(scope.source.error_at_location(
                        &doc.referenced,
                        format!(
                            "an include of steps takes only `vars` beside it, not {}",
                            others.join(", ")
                        ),
                    ));
                    continue;
                }
                let vars = doc.value.vars.take();
                steps.extend(self.included(scope, &include, vars, Self::steps));
                continue;
            }
            if let Some(step) = self.step(scope, doc) {
                steps.push(step);
            }
        }
        steps
    }

    /// The converted contents of the file `include` names: a YAML list of
    /// what `convert` converts, in a scope of its own.
    pub(super) fn included<D: serde::de::DeserializeOwned, T>(
        &mut self,
        scope: &Scope,
        include: &Spanned<String>,
        vars: Option<Spanned<Vars>>,
        convert: fn(&mut Self, &Scope, Vec<D>) -> Vec<T>,
    ) -> Vec<T> {
        let source = match self.includes.enter(&scope.source, include) {
            Ok(source) => source,
            Err(e) => {
                self.errors.push(e);
                return Vec::new();
            }
        };
        let mut inner = Scope {
            source,
            vars: scope.vars.clone(),
            r#become: scope.r#become,
        };
        for (k, v) in vars.map(|v| v.value).unwrap_or_default() {
            inner.vars.insert(k, v);
        }
        let converted = match super::parse_yaml::<Vec<D>>(&inner.source) {
            Ok(docs) => convert(self, &inner, docs),
            Err(e) => {
                self.errors.push(e);
                Vec::new()
            }
        };
        self.includes.leave();
        converted
    }

    /// One step (not an include) as the model has it.
    pub(super) fn step(&mut self, scope: &Scope, doc: Spanned<StepDoc>) -> Option<Step> {
        let source = &scope.source;
        let at = Place::of(&doc.referenced);
        let d = doc.value;
        super::step_values::check(source, &d, &mut self.errors);
        if let Some(vars) = &d.vars {
            self.errors.push(source.error_at_location(
            &vars.referenced,
            "`vars` on a step binds nothing; it goes with `include:` (or at the top of the playbook)",
        ));
        }
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
                        self.errors.push(source.error_at_location(
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
                self.errors.push(
                    source
                        .error_at(at.line, at.column, format!("{label} has no action"))
                        .with_help(format!("give it exactly one of: {}", ACTIONS.join(", "))),
                );
                return None;
            }
            _ => {
                let names: Vec<_> = actions.iter().map(Action::keyword).collect();
                self.errors.push(
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
                self.errors.push(source.error_at_location(
                &c.name.referenced,
                format!(
                    "`{}` cannot be a variable name; use letters, digits and _ (not first a digit)",
                    c.name.value
                ),
            ));
                None
            }
        });
        let r#become = d.r#become.unwrap_or(scope.r#become);
        let rollback = self.steps(
            &Scope {
                r#become,
                ..scope.clone()
            },
            d.rollback,
        );
        Some(Step {
            name: d.name.unwrap_or_else(|| default_name(&action)),
            action,
            os: d.os.map(|o| o.0),
            when: d.when.map(Template::of),
            timeout: d.timeout.map(|t| t.value),
            retries: d.retries.map(|r| r.value).unwrap_or(0),
            retry_delay: d
                .retry_delay
                .unwrap_or(HumanDuration(std::time::Duration::from_secs(5))),
            until: d.until.map(Template::of),
            ok_codes: d.ok_codes.map(|c| c.value).unwrap_or_else(|| vec![0]),
            reboot_codes: d.reboot_codes.map(|c| c.value).unwrap_or_default(),
            capture,
            rollback,
            check_safe: d.check_safe,
            sensitive: d.sensitive,
            marks: d.marks,
            r#become,
            at,
            source: source.clone(),
            include_vars: scope.vars.clone(),
        })
    }
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
