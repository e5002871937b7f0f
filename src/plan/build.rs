//! Building a plan: selection, OS filtering, waves, budgets, and rendering
//! every step's templates for every host.
//!
//! Errors are collected, not returned at the first: a template typo shared
//! by 400 hosts is reported once ("and 399 more hosts"), next to every
//! other problem, so one `validate` shows all there is to fix.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde_json::{Map, Value, json};

use super::baseline::{ProbeDef, plan_probes};
use super::secrets::{MissingSecrets, SecretStore};
use super::steps::{Actions, Failures, HostPlanner, all_captures, define};
use super::targets::target_for;
use super::templates::Templates;
use super::waves;
use super::{ClientPlan, HostPlan, Plan, StepDef, Wave};
use crate::load::{Client, Host, InputError, InputErrors, Inventory, Playbook, Size};
use crate::transport::{HostKeyPolicy, Target};

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
const DEFAULT_WAVES: &[Size] = &[Size::Count(1), Size::Percent(100.0)];

pub fn build_plan(
    playbook: Playbook,
    inventory: &Inventory,
    options: &PlanOptions,
) -> Result<Plan, InputErrors> {
    let secrets = SecretStore::new(inventory.secrets_dir.clone(), options.missing_secrets);
    let mut templates = Templates::new(Arc::clone(&secrets));
    let mut errors: Vec<InputError> = Vec::new();

    // Step definitions, compiled once for all hosts.
    let mut defs: Vec<Arc<StepDef>> = Vec::new();
    for (p, phase) in playbook.phases.iter().enumerate() {
        for (s, step) in phase.steps.iter().enumerate() {
            let key = format!("phases[{p}].steps[{s}]");
            defs.push(define(&key, &phase.name, step, &mut templates, &mut errors));
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
                &mut errors,
            )
        })
        .collect();
    let probes = super::baseline::define_probes(&playbook.baseline, &mut templates, &mut errors);
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }

    let selected = select(inventory, &options.selection)?;
    let mut failures = Failures::default();
    let mut actions = Actions::default();
    let mut clients = Vec::new();
    for (client, hosts) in selected {
        match plan_client(
            &playbook,
            inventory,
            client,
            &hosts,
            &defs,
            &on_failure,
            &probes,
            &templates,
            &secrets,
            options,
            &mut failures,
            &mut actions,
        ) {
            Ok(plan) => clients.push(plan),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(failures.into_errors());
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    Ok(Plan {
        files_read: super::files::files_read(&playbook, inventory, &clients),
        playbook_path: playbook.source.path.clone(),
        inventory_path: inventory.source.path.clone(),
        playbook: Arc::new(playbook),
        clients,
        templates: Arc::new(templates),
        secrets,
    })
}

/// Selected clients with their selected hosts, in inventory order.
pub(super) fn select<'a>(
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
    probes: &[ProbeDef],
    templates: &Templates,
    secrets: &SecretStore,
    options: &PlanOptions,
    failures: &mut Failures,
    actions: &mut Actions,
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
        let mut members = Vec::with_capacity(*size);
        for host in next.by_ref().take(*size) {
            wave_of.insert(host.name.as_str(), i + 1);
            members.push(host.name.clone());
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
    let mut host_plans = Vec::with_capacity(hosts.len());
    let mut last_vars: Option<Arc<Map<String, Value>>> = None;
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
        let reboot = inventory.reboot_policy(client, host).map_err(|m| {
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
        let (steps, on_fail, baseline) = if skipped.is_some() {
            (Vec::new(), Vec::new(), Vec::new())
        } else {
            let context = tera::Context::from_serialize(&vars).expect("a JSON map is a context");
            let mut planner = HostPlanner {
                templates,
                context,
                var_names: vars.keys().cloned().collect(),
                host: &host.name,
                os,
                captures_before: HashSet::new(),
                all_captures: all_captures(defs),
                failures,
                secrets,
                actions,
            };
            // Probes run first, before anything is captured.
            let baseline = plan_probes(
                &mut planner,
                probes,
                host.must_reach_in(client, inventory),
                &inventory.source,
                host.at,
            );
            let mut steps = Vec::with_capacity(defs.len());
            for def in defs {
                let planned = planner.plan_step(def, false);
                if let Some(c) = &def.step.capture {
                    planner.captures_before.insert(c.name.clone());
                }
                steps.push(planned);
            }
            // An on_failure step may read what an earlier one captured (a
            // probe, then the steps that act on it).
            let on_fail = on_failure
                .iter()
                .map(|d| {
                    let planned = planner.plan_step(d, true);
                    if let Some(c) = &d.step.capture {
                        planner.captures_before.insert(c.name.clone());
                    }
                    planned
                })
                .collect();
            (steps, on_fail, baseline)
        };
        let (shared_vars, host_var) = share_vars(vars, &mut last_vars);
        host_plans.push(HostPlan {
            name: host.name.clone(),
            client: client.name.clone(),
            os,
            wave: wave_of.get(host.name.as_str()).copied(),
            skipped,
            target,
            shared_vars,
            host_var,
            steps,
            on_failure: on_fail,
            baseline,
            reboot,
            reboot_with_users: inventory.reboot_with_users(client, host),
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
        site: client.site.clone(),
        hosts: host_plans,
    })
}

/// `vars` split into what hosts may share (all but `host`: the same one
/// as the host before, `last`, when they are equal) and the `host` value.
/// `host` is set last in [`host_vars`] (over any variable of that name),
/// and [`HostPlan::vars`] sets it last again.
fn share_vars(
    mut vars: Map<String, Value>,
    last: &mut Option<Arc<Map<String, Value>>>,
) -> (Arc<Map<String, Value>>, Value) {
    let host = vars.shift_remove("host").unwrap_or(Value::Null);
    let shared = match last.as_ref().filter(|l| ***l == vars) {
        Some(same) => Arc::clone(same),
        None => Arc::new(vars),
    };
    *last = Some(Arc::clone(&shared));
    (shared, host)
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
            "must_reach": host.must_reach_in(client, inventory),
            "must_reach_names": must_reach_names(host.must_reach_in(client, inventory)),
        }),
    );
    vars
}

/// The DNS names among `must_reach` targets (not addresses), each once:
/// what a baseline's DNS probe resolves from the endpoint.
fn must_reach_names(targets: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for target in targets {
        if let Ok(t) = crate::load::must_reach::Target::parse(target)
            && t.is_name()
            && !names.contains(&t.host)
        {
            names.push(t.host);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::load::{SourceFile, parse_inventory, parse_playbook};
    use crate::plan::{ActionKind, HostPlan};

    fn plan(playbook: &str, inventory: &str) -> Plan {
        let playbook = parse_playbook(SourceFile::from_text("p.yml", playbook)).unwrap();
        let inventory = parse_inventory(SourceFile::from_text("i.yml", inventory)).unwrap();
        build_plan(playbook, &inventory, &PlanOptions::default())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn command(host: &HostPlan, step: usize) -> &str {
        match &host.steps[step].action.as_ref().unwrap().kind {
            ActionKind::Shell(script) => script.text(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts_whose_commands_render_alike_share_one_copy() {
        let p = plan(
            "name: p\nphases:\n  - name: one\n    steps:\n      - { name: same, sh: 'echo {{ greeting }} from the client' }\n      - { name: own, sh: 'echo {{ host.name }}' }\n",
            "defaults: { transport: ssh }\nclients:\n  acme:\n    vars: { greeting: hello }\n    hosts:\n      - { name: h1, address: 192.0.2.1, os: linux }\n      - { name: h2, address: 192.0.2.2, os: linux }\n  other:\n    vars: { greeting: bye }\n    hosts:\n      - { name: h3, address: 192.0.2.3, os: linux }\n",
        );
        let hosts: Vec<&HostPlan> = p.hosts().collect();
        let shared = |a: &HostPlan, b: &HostPlan, step: usize| {
            Arc::ptr_eq(
                a.steps[step].action.as_ref().unwrap(),
                b.steps[step].action.as_ref().unwrap(),
            )
        };
        assert_eq!(command(hosts[0], 0), "echo hello from the client");
        assert!(shared(hosts[0], hosts[1], 0), "the same text is held once");
        assert_eq!(command(hosts[2], 0), "echo bye from the client");
        assert!(!shared(hosts[0], hosts[2], 0));
        assert_eq!(command(hosts[0], 1), "echo h1");
        assert_eq!(command(hosts[1], 1), "echo h2");
        assert!(!shared(hosts[0], hosts[1], 1));
    }

    #[test]
    fn hosts_of_a_client_share_their_variables_and_keep_their_own_host() {
        let p = plan(
            "name: p\nvars: { greeting: hi }\nphases:\n  - name: one\n    steps:\n      - { name: s, sh: 'echo {{ greeting }} {{ host.name }}' }\n",
            "defaults: { transport: ssh }\nclients:\n  acme:\n    hosts:\n      - { name: h1, address: 192.0.2.1, os: linux }\n      - { name: h2, address: 192.0.2.2, os: linux }\n      - { name: h3, address: 192.0.2.3, os: linux, vars: { greeting: hey } }\n",
        );
        let hosts: Vec<&HostPlan> = p.hosts().collect();
        assert!(Arc::ptr_eq(&hosts[0].shared_vars, &hosts[1].shared_vars));
        assert!(!Arc::ptr_eq(&hosts[1].shared_vars, &hosts[2].shared_vars));
        let vars = hosts[1].vars();
        assert_eq!(vars["host"]["name"], "h2");
        assert_eq!(vars["greeting"], "hi");
        assert_eq!(vars.keys().next_back().map(String::as_str), Some("host"));
        assert_eq!(hosts[2].vars()["greeting"], "hey");
        assert_eq!(command(hosts[2], 0), "echo hey h3");
    }
}
