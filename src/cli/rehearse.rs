//! `orchestrate rehearse`: plan as for a run (time scaled, secrets stood
//! in), start the fleet simulator, point every host at it, and hand the
//! plan to the same launch as `run`, marked as a rehearsal.
//!
//! The simulator runs on a tokio runtime of its own, in the same process:
//! the run's runtime is started by the shared launch code and knows
//! nothing of it, and what the controller spends stays apart from what the
//! simulated fleet spends (visible per thread in a profile).

use std::path::{Path, PathBuf};

use super::args::{HostKeyPolicyArg, RehearseArgs, RunArgs};
use super::{EXIT_INVALID, execute, load_pair, report_input_errors};
use crate::plan::{MissingSecrets, PlanOptions, Selection, build_plan};
use crate::rehearse::fleet::{self, Rehearsal};
use crate::rehearse::scenario::{Scenario, load_scenario};
use crate::rehearse::{simulator, write_client_key};

pub fn rehearse(a: &RehearseArgs) -> i32 {
    crate::rehearse::raise_open_files_limit();
    let (mut playbook, inventory) = match load_pair(&a.target) {
        Ok(pair) => pair,
        Err(errors) => return report_input_errors(&errors),
    };
    let scenario_path = a
        .scenario
        .clone()
        .or_else(|| default_scenario(&a.target.playbook));
    let scenario = match &scenario_path {
        Some(path) => match load_scenario(path) {
            Ok(s) => Some(s),
            Err(errors) => return report_input_errors(&errors),
        },
        None => None,
    };
    fleet::scale_playbook(&mut playbook, a.time_scale);
    let rates = fleet::phase_rates(
        &playbook,
        scenario.as_ref().unwrap_or(&Scenario::default()),
        a.fail_rate,
    );
    let options = PlanOptions {
        selection: Selection {
            clients: a.selection.clients.clone(),
            limit: a.selection.limit.clone(),
        },
        missing_secrets: MissingSecrets::StandIn,
        host_key_policy: crate::transport::HostKeyPolicy::Strict,
    };
    let mut plan = match build_plan(playbook, &inventory, &options) {
        Ok(plan) => plan,
        Err(errors) => return report_input_errors(&errors),
    };
    let dir = match tempfile::Builder::new()
        .prefix("orchestrate-rehearsal-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: cannot make a folder for the rehearsal's keys: {e}");
            return EXIT_INVALID;
        }
    };
    let (client_key, known_hosts) = (
        dir.path().join("client_ed25519"),
        dir.path().join("known_hosts"),
    );
    if let Err(e) = write_client_key(&client_key, a.seed)
        .and_then(|()| crate::owner_only::create(&known_hosts).map(drop))
    {
        eprintln!(
            "error: cannot write the rehearsal's keys in {}: {e}",
            dir.path().display()
        );
        return EXIT_INVALID;
    }
    let mut rehearsal = Rehearsal {
        seed: a.seed,
        time_scale: a.time_scale,
        scenario,
        rates,
        client_key: &client_key,
        known_hosts: &known_hosts,
        port: 0,
    };
    let fleet = fleet::fleet_for(&plan, &rehearsal);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("simulator")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the simulator's runtime: {e}");
            return EXIT_INVALID;
        }
    };
    let simulator = match runtime.block_on(simulator::start(std::sync::Arc::clone(&fleet))) {
        Ok(simulator) => simulator,
        Err(e) => {
            eprintln!("error: cannot start the fleet simulator: {e}");
            return EXIT_INVALID;
        }
    };
    rehearsal.port = simulator.port;
    fleet::point_at_simulator(&mut plan, &fleet, &rehearsal);
    let scenario_text = scenario_path
        .as_ref()
        .map(|p| format!("scenario {}", p.display()))
        .unwrap_or_else(|| "no scenario (every command succeeds)".into());
    eprintln!(
        "rehearsal: {} simulated hosts, seed {}, time scale {}, {scenario_text}; no real host is contacted",
        fleet.endpoints.len(),
        a.seed,
        a.time_scale
    );
    let state = crate::journal::default_path(&a.target.inventory).with_file_name("rehearsal.db");
    let run_args = RunArgs {
        target: a.target.clone(),
        selection: a.selection.clone(),
        dry_run: false,
        check: false,
        state: a.state.clone(),
        queue: false,
        host_key_policy: HostKeyPolicyArg::Strict,
        execution: a.execution.clone(),
    };
    let code = execute::rehearse(plan, &run_args, state);
    simulator.stop.cancel();
    runtime.shutdown_background();
    drop(dir);
    code
}

/// `scenarios/<name>.yml` in the playbook's folder's parent (the
/// repository layout), or in the playbook's folder.
fn default_scenario(playbook: &Path) -> Option<PathBuf> {
    let stem = playbook.file_stem()?;
    let name = PathBuf::from(stem).with_extension("yml");
    let dir = playbook.parent().unwrap_or(Path::new("."));
    let above = dir.parent().unwrap_or(Path::new(""));
    [above.join("scenarios"), dir.join("scenarios")]
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
}
