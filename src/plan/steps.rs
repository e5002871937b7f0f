//! Planning one host's steps: compiling each step's templates once, then,
//! per host, deciding what is known at plan time (the command, a `when`
//! already false, an `os` that does not match) and what must wait for
//! values captured at run time, and proving that even those can be
//! rendered then (every variable they read is defined or captured before).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::secrets::{SecretRef, SecretStore, secret_refs};
use super::templates::{RenderError, Templates};
use super::{ActionKind, PlannedStep, RenderedAction, StepDef, action_timeout, resolve_source};
use crate::load::{Action, InputError, Step, Template};
use crate::transport::Script;

/// Compiles one step's templates (and its rollback's) under `key`.
pub(super) fn define(
    key: &str,
    phase: &str,
    step: &Step,
    templates: &mut Templates,
    errors: &mut Vec<InputError>,
) -> Arc<StepDef> {
    let (source, bound) = (&step.source, &step.include_vars);
    let mut add = |name: String, t: &Template, condition: bool| {
        let result = if condition {
            templates.add_condition(&name, t, source, bound)
        } else {
            templates.add(&name, t, source, bound)
        };
        if let Err(e) = result {
            errors.push(e);
        }
    };
    for (field, template) in action_templates(key, &step.action) {
        add(field, template, false);
    }
    if let Some(when) = &step.when {
        add(format!("{key}.when"), when, true);
    }
    if let Some(until) = &step.until {
        add(format!("{key}.until"), until, true);
    }
    let rollback = step
        .rollback
        .iter()
        .enumerate()
        .map(|(i, r)| define(&format!("{key}.rollback[{i}]"), phase, r, templates, errors))
        .collect();
    Arc::new(StepDef {
        key: key.to_string(),
        phase: phase.to_string(),
        step: step.clone(),
        rollback,
    })
}

/// The templates of an action, each with its key.
fn action_templates<'a>(key: &str, action: &'a Action) -> Vec<(String, &'a Template)> {
    match action {
        Action::Run(t) | Action::Sh(t) | Action::PowerShell(t) | Action::Cmd(t) => {
            vec![(format!("{key}.command"), t)]
        }
        Action::Script { src, args } => {
            let mut all = vec![(format!("{key}.src"), src)];
            all.extend(
                args.iter()
                    .enumerate()
                    .map(|(i, a)| (format!("{key}.args[{i}]"), a)),
            );
            all
        }
        Action::Upload { src, dest, .. } => {
            vec![(format!("{key}.src"), src), (format!("{key}.dest"), dest)]
        }
        Action::Reboot { .. } | Action::Wait(_) => Vec::new(),
    }
}

/// Renders a step's action for a host, given its variables and whatever
/// has been captured so far. Used by the planner and, for deferred steps,
/// by the runner. `script:` and `upload:` sources are beside the file the
/// step is written in.
pub fn render_action(
    plan_templates: &Templates,
    def: &StepDef,
    context: &tera::Context,
) -> Result<RenderedAction, RenderError> {
    let key = &def.key;
    let playbook_dir = &def.step.dir();
    let render = |field: &str| plan_templates.render(&format!("{key}.{field}"), context);
    let kind = match &def.step.action {
        Action::Run(_) => ActionKind::Shell(Script::Default(render("command")?)),
        Action::Sh(_) => ActionKind::Shell(Script::Sh(render("command")?)),
        Action::PowerShell(_) => ActionKind::Shell(Script::PowerShell(render("command")?)),
        Action::Cmd(_) => ActionKind::Shell(Script::Cmd(render("command")?)),
        Action::Script { args, .. } => ActionKind::Script {
            src: resolve_source(playbook_dir, &render("src")?),
            args: (0..args.len())
                .map(|i| render(&format!("args[{i}]")))
                .collect::<Result<_, _>>()?,
        },
        Action::Upload { mode, .. } => ActionKind::Upload {
            src: resolve_source(playbook_dir, &render("src")?),
            dest: render("dest")?,
            mode: mode.unwrap_or(0o644),
        },
        Action::Reboot { .. } => ActionKind::Reboot,
        Action::Wait(d) => ActionKind::Wait(d.0),
    };
    Ok(RenderedAction {
        kind,
        timeout: action_timeout(&def.step),
    })
}

pub(super) fn all_captures(defs: &[Arc<StepDef>]) -> BTreeMap<String, String> {
    defs.iter()
        .filter_map(|d| {
            d.step
                .capture
                .as_ref()
                .map(|c| (c.name.clone(), d.step.name.clone()))
        })
        .collect()
}

/// Plans the steps of one host.
pub(super) struct HostPlanner<'a> {
    pub(super) templates: &'a Templates,
    pub(super) context: tera::Context,
    pub(super) var_names: Vec<String>,
    pub(super) host: &'a str,
    pub(super) os: crate::transport::Os,
    /// Names captured by the steps before the one being planned.
    pub(super) captures_before: HashSet<String>,
    /// Every captured name, with the step capturing it.
    pub(super) all_captures: BTreeMap<String, String>,
    pub(super) failures: &'a mut Failures,
    pub(super) secrets: &'a SecretStore,
    /// Actions rendered so far, for every host of the plan.
    pub(super) actions: &'a mut Actions,
}

/// Every distinct action the plan rendered, each held once: hosts whose
/// commands render alike (the usual case: a script reads client-wide
/// variables, not the host's name) share one copy.
#[derive(Default)]
pub(super) struct Actions {
    seen: HashSet<Arc<RenderedAction>>,
}

impl Actions {
    /// The one shared copy of `action`.
    pub(super) fn share(&mut self, action: RenderedAction) -> Arc<RenderedAction> {
        if let Some(kept) = self.seen.get(&action) {
            return Arc::clone(kept);
        }
        let action = Arc::new(action);
        self.seen.insert(Arc::clone(&action));
        action
    }
}

impl HostPlanner<'_> {
    pub(super) fn plan_step(&mut self, def: &Arc<StepDef>, after_everything: bool) -> PlannedStep {
        let step = &def.step;
        // Rollback and on_failure run after their step (or last): they may
        // read everything captured up to there.
        let mut visible = self.captures_before.clone();
        if let Some(c) = &step.capture {
            visible.insert(c.name.clone());
        }
        if after_everything {
            visible.extend(self.all_captures.keys().cloned());
        }
        let rollback: Vec<PlannedStep> = {
            let saved = std::mem::replace(&mut self.captures_before, visible.clone());
            let planned = def
                .rollback
                .iter()
                .map(|r| self.plan_step(r, after_everything))
                .collect();
            self.captures_before = saved;
            planned
        };
        let mut planned = PlannedStep {
            def: Arc::clone(def),
            action: None,
            when_deferred: false,
            skip: None,
            rollback,
        };
        if let Some(oses) = &step.os
            && !oses.contains(&self.os)
        {
            let list: Vec<&str> = oses.iter().map(|o| o.as_str()).collect();
            planned.skip = Some(format!("only for {}", list.join(", ")));
            return planned;
        }
        if step.r#become && !self.os.is_posix() {
            self.failures.add(
                def,
                self.host,
                RenderError {
                    message: format!(
                        "`become` works on Linux and macOS hosts only, and this host runs {}: \
                         log in as an administrator instead (the inventory's `user`) and set \
                         `become: false` for Windows steps",
                        self.os
                    ),
                    at: step.at,
                    source: step.source.clone(),
                },
            );
            return planned;
        }
        if self.os.is_posix()
            && let Some(message) = crate::load::step_values::posix_exit_code_problem(step)
        {
            self.failures.add(
                def,
                self.host,
                RenderError {
                    message: format!("{message} (this host's os is {})", self.os),
                    at: step.at,
                    source: step.source.clone(),
                },
            );
        }
        let before = self.captures_before.clone();
        if let Some(when) = &step.when {
            let key = format!("{}.when", def.key);
            match self.check_names(def, &key, &when.text, &before, &[]) {
                Some(true) => planned.when_deferred = true,
                Some(false) => match self.templates.condition(&key, &self.context) {
                    Ok(true) => {}
                    Ok(false) => {
                        planned.skip = Some(format!("when `{}` is false", when.text.trim()))
                    }
                    Err(e) => self.failures.add(def, self.host, e),
                },
                None => {}
            }
        }
        if let Some(until) = &step.until {
            let key = format!("{}.until", def.key);
            let own: Vec<&str> = std::iter::once("result")
                .chain(step.capture.as_ref().map(|c| c.name.as_str()))
                .collect();
            self.check_names(def, &key, &until.text, &visible, &own);
        }
        let mut deferred = false;
        for (key, template) in action_templates(&def.key, &step.action) {
            match self.check_names(
                def,
                &key,
                &template.text,
                &visible_for_action(&before, &visible, after_everything),
                &[],
            ) {
                Some(true) => deferred = true,
                Some(false) => {}
                None => return planned,
            }
        }
        if !deferred && planned.skip.is_none() {
            match render_action(self.templates, def, &self.context) {
                Ok(action) => {
                    if let ActionKind::Script { src, .. } | ActionKind::Upload { src, .. } =
                        &action.kind
                        && !src.is_file()
                    {
                        self.failures.add(
                            def,
                            self.host,
                            RenderError {
                                message: format!(
                                    "{} does not exist on this controller",
                                    src.display()
                                ),
                                at: step.at,
                                source: step.source.clone(),
                            },
                        );
                    }
                    if let Some(error) = self.secret_args_refused(def, &action) {
                        self.failures.add(def, self.host, error);
                    }
                    planned.action = Some(self.actions.share(action));
                }
                Err(e) => self.failures.add(def, self.host, e),
            }
        } else if deferred
            && planned.skip.is_none()
            && let Some(error) = self.deferred_secret_args_refused(def)
        {
            self.failures.add(def, self.host, error);
        }
        planned
    }

    /// A `script` step on a POSIX host whose arguments would go on the
    /// script's command line (it is no shell script, see `script_args`),
    /// one of them holding a secret: refused, since every user of the
    /// endpoint can read a process's arguments and nothing can hide them.
    fn secret_args_refused(&self, def: &StepDef, action: &RenderedAction) -> Option<RenderError> {
        let ActionKind::Script { src, args } = &action.kind else {
            return None;
        };
        let redactor = self.secrets.redactor();
        let index = args
            .iter()
            .position(|a| redactor.finds_secret(a.as_bytes()))?;
        self.refuse_secret_arg(def, src, index)
    }

    /// [`Self::secret_args_refused`] for a step rendered only at run time:
    /// an argument whose template calls `secret(...)`, of a script whose
    /// `src` is known now.
    fn deferred_secret_args_refused(&self, def: &StepDef) -> Option<RenderError> {
        let Action::Script { args, .. } = &def.step.action else {
            return None;
        };
        let index = args.iter().position(|a| !secret_refs(&a.text).is_empty())?;
        let src = self
            .templates
            .render(&format!("{}.src", def.key), &self.context)
            .ok()?;
        self.refuse_secret_arg(def, &resolve_source(&def.step.dir(), &src), index)
    }

    /// Argument `index` of the script `src` holds a secret: the error, if
    /// the arguments of `src` stay on its command line on this host.
    fn refuse_secret_arg(
        &self,
        def: &StepDef,
        src: &std::path::Path,
        index: usize,
    ) -> Option<RenderError> {
        if !self.os.is_posix() {
            // A Windows script runs inside the step's shell, fed on stdin.
            return None;
        }
        let Action::Script { args, .. } = &def.step.action else {
            return None;
        };
        // Unreadable: the run says so (a missing file is refused above).
        let why = crate::transport::script_args::why_args_stay_outside(src).ok()??;
        let name = src.file_name().unwrap_or(src.as_os_str()).to_string_lossy();
        Some(RenderError {
            message: format!(
                "argument {} of the script holds a secret, and {name} {why}, so its arguments \
                 would go on its command line on the host, where every user of the endpoint can \
                 read them (`ps`, /proc/PID/cmdline): wrap the program in a shell script that \
                 runs it (a shell script's arguments are set inside its private copy), or upload \
                 the secret to a file only its owner can read with an `upload:` step (mode \
                 \"0600\") and have the script read it from there",
                index + 1
            ),
            at: args.get(index).map_or(def.step.at, |a| a.at),
            source: def.step.source.clone(),
        })
    }

    /// Checks that every variable `key` reads is defined, captured before,
    /// or one of `extra`. `Some(true)`: it reads a captured value (render at
    /// run time); `Some(false)`: render now; `None`: an error was recorded.
    fn check_names(
        &mut self,
        def: &StepDef,
        key: &str,
        text: &str,
        captured: &HashSet<String>,
        extra: &[&str],
    ) -> Option<bool> {
        let mut reads_capture = false;
        for name in self.templates.variables(key) {
            if captured.contains(&name) || extra.contains(&name.as_str()) {
                reads_capture = true;
                continue;
            }
            if self.context.contains_key(&name) || guarded(text, &name) {
                continue;
            }
            let message = match self.all_captures.get(&name) {
                Some(by) => {
                    format!("`{name}` is captured by step `{by}`, which runs after this one")
                }
                None => format!("undefined variable `{name}`{}", self.suggest(&name)),
            };
            self.failures.add(
                def,
                self.host,
                RenderError {
                    message,
                    at: self.templates.place_of(key, &name).unwrap_or(def.step.at),
                    source: def.step.source.clone(),
                },
            );
            return None;
        }
        if reads_capture {
            // Rendered only at run time: fetch the secrets it names now, so
            // a missing one fails the plan, not host 312 half-way.
            // A reference inside a `{% if %}` may never be rendered: only
            // unconditional ones are required now (the live redactor masks
            // the others whenever they are fetched).
            let first_block = text.find("{%").unwrap_or(text.len());
            let unconditional = secret_refs(&text[..first_block]);
            for secret in unconditional {
                let name = match secret {
                    SecretRef::Literal(name) => Some(name),
                    SecretRef::Variable(var) => self
                        .context
                        .get(&var)
                        .and_then(|v| v.as_str().map(str::to_string)),
                };
                if let Some(name) = name
                    && let Err(message) = self.secrets.get(&name)
                {
                    let at = self
                        .templates
                        .place_of(key, "secret")
                        .unwrap_or(def.step.at);
                    let source = def.step.source.clone();
                    self.failures.add(
                        def,
                        self.host,
                        RenderError {
                            message,
                            at,
                            source,
                        },
                    );
                    return None;
                }
            }
        }
        Some(reads_capture)
    }

    fn suggest(&self, name: &str) -> String {
        let mut known: Vec<String> = self.all_captures.keys().cloned().collect();
        known.extend(self.var_names.iter().cloned());
        known
            .iter()
            .filter(|k| strsim::levenshtein(k, name) <= 2)
            .min_by_key(|k| strsim::levenshtein(k, name))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_else(|| "; define it in the playbook's or the inventory's vars".to_string())
    }
}

fn visible_for_action(
    before: &HashSet<String>,
    visible: &HashSet<String>,
    after_everything: bool,
) -> HashSet<String> {
    // A step's own capture is not yet there when its command runs, unless
    // it runs after everything (on_failure, rollback).
    if after_everything {
        visible.clone()
    } else {
        before.clone()
    }
}

/// A template that asks whether a variable exists may name an undefined one.
fn guarded(text: &str, name: &str) -> bool {
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    ["is defined", "is undefined", "is not defined"]
        .iter()
        .any(|t| squeezed.contains(&format!("{name} {t}")))
        || squeezed.contains(&format!("{name} | default"))
        || squeezed.contains(&format!("{name}|default"))
}

/// Template errors across hosts, each reported once with the hosts it hit.
#[derive(Default)]
pub(super) struct Failures {
    seen: BTreeMap<(String, String), (RenderError, String, Vec<String>)>,
}

impl Failures {
    fn add(&mut self, def: &StepDef, host: &str, error: RenderError) {
        let entry = self
            .seen
            .entry((def.key.clone(), error.message.clone()))
            .or_insert_with(|| {
                (
                    error,
                    format!("step `{}` ({})", def.step.name, def.phase),
                    Vec::new(),
                )
            });
        entry.2.push(host.to_string());
    }

    pub(super) fn into_errors(self) -> Vec<InputError> {
        self.seen
            .into_values()
            .map(|(error, step, hosts)| {
                let more = match hosts.len() {
                    1 => String::new(),
                    n => format!(
                        " (and {} more host{})",
                        n - 1,
                        if n == 2 { "" } else { "s" }
                    ),
                };
                error.into_input_error(|message| {
                    format!("host {}{more}, {step}: {message}", hosts[0])
                })
            })
            .collect()
    }
}
