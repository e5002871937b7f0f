//! KES for Mac's settings export, as the macOS playbook runs it: `kav export
//! COMPONENT FILE` with a component KES for Mac has (`fm`, file monitoring;
//! there is no `oas`, the old default, which stopped every Mac in
//! precheck). The command is the dry run's, on the example inventory, run by
//! a real `sh` against the kav stand-in (tests/standins/bin/kav), which
//! refuses an unknown component as the real one does.

use std::process::Command;

use serde_json::Value;

use crate::harness::{self, Scratch};

/// The first step named `name` anywhere in the plan.
fn step_command(plan: &Value, name: &str) -> Option<String> {
    match plan {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some(name)
                && let Some(c) = map.get("command").and_then(Value::as_str)
            {
                return Some(c.to_string());
            }
            map.values().find_map(|v| step_command(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| step_command(v, name)),
        _ => None,
    }
}

/// Runs `script` with the stand-ins first on PATH, on a host with KES for
/// Mac installed that excludes /opt/app/data.
fn run_on_a_mac(scratch: &Scratch, script: &str) -> std::process::Output {
    let state = scratch.path().join("host");
    std::fs::create_dir_all(state.join("pkgs")).unwrap();
    std::fs::write(state.join("pkgs/kav"), "11.3\n").unwrap();
    std::fs::write(state.join("kesl-exclusions"), "/opt/app/data\n").unwrap();
    let backup = scratch.path().join("backup");
    let script = script.replace(
        "/Library/Application Support/MSP/orchestrate",
        backup.to_str().unwrap(),
    );
    let bin = harness::repo().join("tests/standins/bin");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("ORCH_STATE", &state)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap()
}

#[test]
fn the_macos_playbook_exports_the_file_monitoring_settings_which_kav_knows() {
    let scratch = Scratch::new();
    let repo = harness::repo();
    let plan = scratch.plan_json(
        repo.join("playbooks/macos-kes-to-mdatp.yml")
            .to_str()
            .unwrap(),
        repo.join("inventory/example.yml").to_str().unwrap(),
    );
    let export = step_command(&plan, "export KES for Mac settings").expect("the export step");
    assert!(
        export.contains("\"$kav\" export 'fm' \"$file\""),
        "{export}"
    );

    let out = run_on_a_mac(&scratch, &export);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ini = String::from_utf8_lossy(&out.stdout);
    assert!(ini.contains("Path=/opt/app/data"), "{ini}");

    // The old component name is refused, so the step fails.
    let out = run_on_a_mac(&scratch, &export.replace("'fm'", "'oas'"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown component 'oas'"));
}
