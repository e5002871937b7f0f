//! Building a plan: selection, OS filtering, waves, budgets, and rendering
//! every step's templates for every host.
//!
//! Errors are collected, not returned at the first: a template typo shared
//! by 400 hosts is reported once ("and 399 more hosts"), next to every
//! other problem, so one `validate` shows all there is to fix.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde_json::{Map, Value, json};

use super::secrets::{MissingSecrets, SecretStore};
use super::templates::{RenderError, Templates};
use super::waves;
use super::{
    ClientPlan, DEFAULT_REBOOT_TIMEOUT, HostPlan, Plan, PlannedStep, RenderedAction, StepDef, Wave,
    resolve_source,
};
use crate::load::{
    Action, Client, Host, InputError, InputErrors, Inventory, Playbook, Size, SourceFile, Step,
    Template,
};
use crate::transport::{
    HostKeyPolicy, Script, Secret, SshSettings, Target, TransportKind, WinrmSettings,
};

/// Which hosts a run touches (`--client`, `--limit`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub clients: Vec<String>,
    /// A glob over host names (`acme-ws*`), or a client name.
    pub limit: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub selection: Selection,
    pub missing_secrets: MissingSecrets,
    pub host_key_policy: HostKeyPolicy,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            selection: Selection::default(),
            missing_secrets: MissingSecrets::Placeholder,
            host_key_policy: HostKeyPolicy::Strict,
        }
    }
}

const DEFAULT_CONCURRENCY: usize = 20;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_WAVES: &[Size] = &[Size::Count(1), Size::Percent(100.0)];

pub fn build_plan(
    playbook: Playbook,
    inventory: &Inventory,
    options: &PlanOptions,
) -> Result<Plan, InputErrors> {
    let secrets = SecretStore::new(inventory.secrets_dir.clone(), options.missing_secrets);
    let mut templates = Templates::new(Arc::clone(&secrets));
    let source = playbook.source.clone();
    let mut errors: Vec<InputError> = Vec::new();

    // Step definitions, compiled once for all hosts.
    let mut defs: Vec<Arc<StepDef>> = Vec::new();
    for (p, phase) in playbook.phases.iter().enumerate() {
        for (s, step) in phase.steps.iter().enumerate() {
            let key = format!("phases[{p}].steps[{s}]");
            defs.push(define(
                &key,
                &phase.name,
                step,
                &mut templates,
                &source,
                &mut errors,
            ));
        }
    }
    let on_failure: Vec<Arc<StepDef>> = playbook
        .on_failure
        .iter()
        .enumerate()
        .map(|(i, step)| {
            define(
                &format!("on_failure[{i}]"),
                "on_failure",
                step,
                &mut templates,
                &source,
                &mut errors,
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }

    let selected = select(inventory, &options.selection)?;
    let mut failures = Failures::default();
    let mut clients = Vec::new();
    for (client, hosts) in selected {
        match plan_client(
            &playbook,
            inventory,
            client,
            &hosts,
            &defs,
            &on_failure,
            &templates,
            &secrets,
            options,
            &mut failures,
        ) {
            Ok(plan) => clients.push(plan),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(failures.into_errors(&source));
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    Ok(Plan {
        playbook_path: playbook.source.path.clone(),
        inventory_path: inventory.source.path.clone(),
        playbook: Arc::new(playbook),
        clients,
        templates: Arc::new(templates),
        secrets,
    })
}

/// The transport targets of the selected hosts, for commands that reach
/// hosts without a playbook (`keyscan`).
pub fn targets(inventory: &Inventory, options: &PlanOptions) -> Result<Vec<Target>, InputErrors> {
    let secrets = SecretStore::new(inventory.secrets_dir.clone(), options.missing_secrets);
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (client, hosts) in select(inventory, &options.selection)? {
        for host in hosts {
            match target_for(inventory, client, host, Some(&secrets), options) {
                Ok(target) => targets.push(target),
                Err(m) => errors.push(inventory.source.error_at(
                    host.at.line,
                    host.at.column,
                    format!("host `{}`: {m}", host.name),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(InputErrors(errors))
    }
}

/// Compiles one step's templates (and its rollback's) under `key`.
fn define(
    key: &str,
    phase: &str,
    step: &Step,
    templates: &mut Templates,
    source: &SourceFile,
    errors: &mut Vec<InputError>,
) -> Arc<StepDef> {
    let mut add = |name: String, t: &Template, condition: bool| {
        let result = if condition {
            templates.add_condition(&name, t, source)
        } else {
            templates.add(&name, t, source)
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
        .map(|(i, r)| {
            define(
                &format!("{key}.rollback[{i}]"),
                phase,
                r,
                templates,
                source,
                errors,
            )
        })
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
/// by the runner.
pub fn render_action(
    plan_templates: &Templates,
    source: &SourceFile,
    playbook_dir: &std::path::Path,
    def: &StepDef,
    context: &tera::Context,
) -> Result<RenderedAction, RenderError> {
    let key = &def.key;
    let render = |field: &str| plan_templates.render(&format!("{key}.{field}"), context, source);
    Ok(match &def.step.action {
        Action::Run(_) => RenderedAction::Shell(Script::Default(render("command")?)),
        Action::Sh(_) => RenderedAction::Shell(Script::Sh(render("command")?)),
        Action::PowerShell(_) => RenderedAction::Shell(Script::PowerShell(render("command")?)),
        Action::Cmd(_) => RenderedAction::Shell(Script::Cmd(render("command")?)),
        Action::Script { args, .. } => RenderedAction::Script {
            src: resolve_source(playbook_dir, &render("src")?),
            args: (0..args.len())
                .map(|i| render(&format!("args[{i}]")))
                .collect::<Result<_, _>>()?,
        },
        Action::Upload { mode, .. } => RenderedAction::Upload {
            src: resolve_source(playbook_dir, &render("src")?),
            dest: render("dest")?,
            mode: mode.unwrap_or(0o644),
        },
        Action::Reboot { timeout } => RenderedAction::Reboot {
            timeout: timeout.map(|t| t.0).unwrap_or(DEFAULT_REBOOT_TIMEOUT),
        },
        Action::Wait(d) => RenderedAction::Wait(d.0),
    })
}

/// Selected clients with their selected hosts, in inventory order.
fn select<'a>(
    inventory: &'a Inventory,
    selection: &Selection,
) -> Result<Vec<(&'a Client, Vec<&'a Host>)>, InputErrors> {
    let known: Vec<&str> = inventory.clients.iter().map(|c| c.name.as_str()).collect();
    for wanted in &selection.clients {
        if !known.contains(&wanted.as_str()) {
            return Err(InputError::plain(format!(
                "--client {wanted}: no such client in {}; the clients are: {}",
                inventory.source.name(),
                known.join(", ")
            ))
            .into());
        }
    }
    let limit: Option<GlobMatcher> = match &selection.limit {
        None => None,
        Some(pattern) => Some(
            Glob::new(pattern)
                .map_err(|e| InputError::plain(format!("--limit {pattern}: {e}")))?
                .compile_matcher(),
        ),
    };
    let mut out = Vec::new();
    for client in &inventory.clients {
        if !selection.clients.is_empty() && !selection.clients.contains(&client.name) {
            continue;
        }
        let hosts: Vec<&Host> = client
            .hosts
            .iter()
            .filter(|h| match &limit {
                None => true,
                Some(m) => m.is_match(&h.name) || m.is_match(&client.name),
            })
            .collect();
        if !hosts.is_empty() {
            out.push((client, hosts));
        }
    }
    if out.is_empty() {
        return Err(InputError::plain(format!(
            "no host of {} matches the selection (--client {:?}, --limit {:?})",
            inventory.source.name(),
            selection.clients,
            selection.limit.as_deref().unwrap_or("")
        ))
        .into());
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn plan_client(
    playbook: &Playbook,
    inventory: &Inventory,
    client: &Client,
    hosts: &[&Host],
    defs: &[Arc<StepDef>],
    on_failure: &[Arc<StepDef>],
    templates: &Templates,
    secrets: &SecretStore,
    options: &PlanOptions,
    failures: &mut Failures,
) -> Result<ClientPlan, InputError> {
    let applies = |host: &Host| {
        let os = host.os_in(client, inventory);
        playbook.os.as_ref().is_none_or(|list| list.contains(&os))
    };
    let runnable: Vec<&Host> = hosts.iter().copied().filter(|h| applies(h)).collect();

    let (sizes, at, file) = match (&client.waves, &playbook.waves) {
        (Some(w), _) => (w.as_slice(), client.waves_at, &inventory.source),
        (None, Some(w)) => (w.as_slice(), playbook.waves_at, &playbook.source),
        (None, None) => (DEFAULT_WAVES, playbook.waves_at, &playbook.source),
    };
    let cut = waves::cut(sizes, runnable.len()).map_err(|message| {
        file.error_at(
            at.line.max(1),
            at.column.max(1),
            format!("client `{}`: {message}", client.name),
        )
    })?;
    let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves = Vec::new();
    let mut next = runnable.iter();
    for (i, size) in cut.iter().enumerate() {
        let members: Vec<String> = next.by_ref().take(*size).map(|h| h.name.clone()).collect();
        for m in &members {
            wave_of.insert(
                hosts
                    .iter()
                    .find(|h| &h.name == m)
                    .map(|h| h.name.as_str())
                    .unwrap_or(""),
                i + 1,
            );
        }
        waves.push(Wave {
            index: i + 1,
            hosts: members,
        });
    }

    let budget = client
        .failure_budget
        .or(playbook.failure_budget)
        .unwrap_or(Size::Count(0));
    let mut host_plans = Vec::new();
    for host in hosts {
        let os = host.os_in(client, inventory);
        // A skipped host is never contacted: its credentials are not needed.
        let target = target_for(
            inventory,
            client,
            host,
            applies(host).then_some(secrets),
            options,
        )
        .map_err(|m| {
            inventory.source.error_at(
                host.at.line,
                host.at.column,
                format!("host `{}`: {m}", host.name),
            )
        })?;
        let vars = host_vars(playbook, inventory, client, host, os, &target);
        let skipped = (!applies(host)).then(|| {
            let wanted: Vec<&str> = playbook.os.iter().flatten().map(|o| o.as_str()).collect();
            format!("the playbook is for {}, not {os}", wanted.join(", "))
        });
        let (steps, on_fail) = if skipped.is_some() {
            (Vec::new(), Vec::new())
        } else {
            let context = tera::Context::from_serialize(&vars).expect("a JSON map is a context");
            let mut planner = HostPlanner {
                templates,
                source: &playbook.source,
                playbook_dir: playbook.dir(),
                context,
                var_names: vars.keys().cloned().collect(),
                host: &host.name,
                os,
                captures_before: HashSet::new(),
                all_captures: all_captures(defs),
                failures,
            };
            let mut steps = Vec::new();
            for def in defs {
                let planned = planner.plan_step(def, false);
                if let Some(c) = &def.step.capture {
                    planner.captures_before.insert(c.name.clone());
                }
                steps.push(planned);
            }
            let on_fail = on_failure
                .iter()
                .map(|d| planner.plan_step(d, true))
                .collect();
            (steps, on_fail)
        };
        host_plans.push(HostPlan {
            name: host.name.clone(),
            client: client.name.clone(),
            os,
            wave: wave_of.get(host.name.as_str()).copied(),
            skipped,
            target,
            vars,
            steps,
            on_failure: on_fail,
        });
    }
    Ok(ClientPlan {
        name: client.name.clone(),
        waves,
        allowed_failures: waves::allowed_failures(budget, runnable.len()),
        failure_budget: budget,
        pause_between_waves: client
            .pause_between_waves
            .unwrap_or(playbook.pause_between_waves),
        concurrency: client
            .concurrency
            .or(playbook.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY),
        hosts: host_plans,
    })
}

fn all_captures(defs: &[Arc<StepDef>]) -> BTreeMap<String, String> {
    defs.iter()
        .filter_map(|d| {
            d.step
                .capture
                .as_ref()
                .map(|c| (c.name.clone(), d.step.name.clone()))
        })
        .collect()
}

/// The variables of a host's templates: playbook vars, then inventory
/// defaults, client and host vars (nearest wins), then `host`.
fn host_vars(
    playbook: &Playbook,
    inventory: &Inventory,
    client: &Client,
    host: &Host,
    os: crate::transport::Os,
    target: &Target,
) -> Map<String, Value> {
    let mut vars = Map::new();
    for level in [
        &playbook.vars,
        &inventory.default_vars,
        &client.vars,
        &host.vars,
    ] {
        for (k, v) in level {
            vars.insert(k.clone(), v.clone());
        }
    }
    vars.insert(
        "host".into(),
        json!({
            "name": host.name,
            "address": host.address,
            "os": os.as_str(),
            "client": client.name,
            "transport": target.kind.as_str(),
        }),
    );
    vars
}

fn target_for(
    inventory: &Inventory,
    client: &Client,
    host: &Host,
    secrets: Option<&SecretStore>,
    options: &PlanOptions,
) -> Result<Target, String> {
    let c = inventory.connection(client, host);
    let secret = |name: &Option<String>, what: &str| -> Result<Option<Secret>, String> {
        match (name, secrets) {
            (Some(n), Some(store)) => store.get(n).map(Some).map_err(|e| format!("{what}: {e}")),
            _ => Ok(None),
        }
    };
    let kind = c.transport.unwrap_or(TransportKind::Ssh);
    let (ssh_password, winrm_password) = match kind {
        TransportKind::Ssh => (secret(&c.ssh.password_secret, "ssh.password_secret")?, None),
        TransportKind::Winrm => (
            None,
            secret(&c.winrm.password_secret, "winrm.password_secret")?,
        ),
        TransportKind::Local => (None, None),
    };
    let passphrase = match kind {
        TransportKind::Ssh => secret(&c.ssh.passphrase_secret, "ssh.passphrase_secret")?,
        _ => None,
    };
    let defaults = WinrmSettings::default();
    let tls = c.winrm.tls.unwrap_or(defaults.tls);
    Ok(Target {
        name: host.name.clone(),
        address: host.address.clone(),
        port: c.port,
        os: host.os_in(client, inventory),
        user: c.user.clone(),
        kind,
        ssh: SshSettings {
            identity_file: c
                .ssh
                .identity_file
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            identity_passphrase: passphrase,
            password: ssh_password,
            known_hosts: c
                .ssh
                .known_hosts
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            host_key: c.ssh.host_key.clone(),
            jump_host: c.jump_host.clone(),
        },
        winrm: WinrmSettings {
            port: c
                .winrm
                .port
                .or(c.port)
                .unwrap_or(if tls { 5986 } else { 5985 }),
            tls,
            auth: c.winrm.auth.unwrap_or(defaults.auth),
            password: winrm_password,
            ca_file: c
                .winrm
                .ca_file
                .as_deref()
                .map(|p| inventory.resolve_path(p)),
            insecure_skip_verify: c.winrm.insecure_skip_verify.unwrap_or(false),
        },
        host_key_policy: options.host_key_policy,
        connect_timeout: c
            .connect_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        reboot_command: c.reboot_command.clone(),
    })
}

/// Plans the steps of one host.
struct HostPlanner<'a> {
    templates: &'a Templates,
    source: &'a SourceFile,
    playbook_dir: std::path::PathBuf,
    context: tera::Context,
    var_names: Vec<String>,
    host: &'a str,
    os: crate::transport::Os,
    /// Names captured by the steps before the one being planned.
    captures_before: HashSet<String>,
    /// Every captured name, with the step capturing it.
    all_captures: BTreeMap<String, String>,
    failures: &'a mut Failures,
}

impl HostPlanner<'_> {
    fn plan_step(&mut self, def: &Arc<StepDef>, after_everything: bool) -> PlannedStep {
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
        if let Some(oses) = &step.os {
            if !oses.contains(&self.os) {
                let list: Vec<&str> = oses.iter().map(|o| o.as_str()).collect();
                planned.skip = Some(format!("only for {}", list.join(", ")));
                return planned;
            }
        }
        let before = self.captures_before.clone();
        if let Some(when) = &step.when {
            let key = format!("{}.when", def.key);
            match self.check_names(def, &key, &when.text, &before, &[]) {
                Some(true) => planned.when_deferred = true,
                Some(false) => match self.templates.condition(&key, &self.context, self.source) {
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
            match render_action(
                self.templates,
                self.source,
                &self.playbook_dir,
                def,
                &self.context,
            ) {
                Ok(action) => {
                    if let RenderedAction::Script { src, .. } | RenderedAction::Upload { src, .. } =
                        &action
                    {
                        if !src.is_file() {
                            self.failures.add(
                                def,
                                self.host,
                                RenderError {
                                    message: format!(
                                        "{} does not exist on this controller",
                                        src.display()
                                    ),
                                    at: step.at,
                                },
                            );
                        }
                    }
                    planned.action = Some(action);
                }
                Err(e) => self.failures.add(def, self.host, e),
            }
        }
        planned
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
                    at: self
                        .templates
                        .place_of(key, &name, self.source)
                        .unwrap_or(def.step.at),
                },
            );
            return None;
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
struct Failures {
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

    fn into_errors(self, source: &SourceFile) -> Vec<InputError> {
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
                source.error_at(
                    error.at.line.max(1),
                    error.at.column.max(1),
                    format!("host {}{more}, {step}: {}", hosts[0], error.message),
                )
            })
            .collect()
    }
}
