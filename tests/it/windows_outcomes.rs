//! How the shipped Windows playbooks end a host (issue #13): what a failed
//! host is rolled back to (Kaspersky, which no longer gets updates for US
//! customers, so the host ends `rolled_back_to_unsupported_product`; or,
//! with `rollback_to: defender`, Defender, so it ends plain `failed`,
//! protected by a supported product), and when a host in a maintenance
//! window reboots.
//!
//! The simulated fleet of windows_playbook_flow.rs (tests/it/windows_fleet/).

use serde_json::{Value, json};

use crate::windows_fleet::{
    Fleet, defender_table, host, kes_removal_needs_reboot, position, rollback, set,
};

const STAGED: &str = "kes_rollback_package: 'C:\\ProgramData\\MSP\\packages\\kes\\kes_win.msi', \
                      exclusions: { processes: [DtxSvc.exe] }";

/// The Defender playbook on ws01, failing at "carry exclusions over", with
/// the KES package staged and `extra` client vars (`key: value, `...).
fn failed_at_exclusions(extra: &str) -> (Fleet, Value, i32) {
    let mut table = defender_table();
    set(
        &mut table,
        "add exclusions",
        json!({ "hosts": { "ws01": { "exit_code": 1, "stdout": "",
            "stderr": "Add-MpPreference : Operation failed with the following error: 0x800106ba\r\n" } } }),
    );
    let fleet = Fleet::start(&["ws01"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        &format!("{{ {extra}{STAGED} }}"),
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    (fleet, report, run.code)
}

#[test]
fn rolled_back_to_kaspersky_the_host_is_on_an_unsupported_product() {
    let (fleet, report, code) = failed_at_exclusions("");
    assert_eq!(code, 1);
    let ws01 = host(&report, "ws01");
    assert_eq!(ws01["status"], "rolled_back_to_unsupported_product");
    assert!(
        ws01["error"]
            .as_str()
            .unwrap()
            .contains("put Kaspersky Endpoint Security back from the staged package"),
        "{}",
        ws01["error"]
    );
    let answered = fleet.answered("ws01");
    assert!(answered.contains(&"KES back".to_string()), "{answered:?}");
}

#[test]
fn rollback_to_defender_keeps_defender_on_and_the_host_is_plain_failed() {
    let (fleet, report, code) = failed_at_exclusions("rollback_to: defender, ");
    assert_eq!(code, 1);
    let ws01 = host(&report, "ws01");
    assert_eq!(ws01["status"], "failed", "{ws01:#}");
    let answered = fleet.answered("ws01");
    let after_failure = &answered[position(&answered, "add exclusions") + 1..];
    // Kaspersky is not put back, the client's exclusions stay in Defender,
    // and on_failure switches Defender on and proves it running.
    assert_eq!(after_failure, ["antivirus engines", "some antivirus on"]);
    let records = rollback(&report, "ws01");
    for skipped in [
        "remove the exclusions added by this run",
        "put Network Agent back from the staged package",
        "put Kaspersky Endpoint Security back from the staged package",
    ] {
        assert!(
            records.contains(&(skipped.into(), "skipped".into())),
            "{skipped}: {records:?}"
        );
    }
    assert!(records.contains(&("make sure some antivirus is on".into(), "ok".into())));
}

#[test]
fn a_kaspersky_package_named_but_missing_on_the_host_is_a_failed_rollback() {
    let mut table = defender_table();
    set(
        &mut table,
        "add exclusions",
        json!({ "hosts": { "ws01": { "exit_code": 1, "stdout": "", "stderr": "" } } }),
    );
    // Test-Path finds no package: the script says so and exits 1.
    set(
        &mut table,
        "KES back",
        json!({ "exit_code": 1,
            "stdout": "No KES package at C:\\ProgramData\\MSP\\packages\\kes\\kes_win.msi (kes_rollback_package); Kaspersky was not put back.\r\n" }),
    );
    let fleet = Fleet::start(&["ws01"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", &format!("{{ {STAGED} }}"));
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(3);
    assert_eq!(host(&report, "ws01")["status"], "rollback_failed");
    // Defender is still switched on for it.
    assert!(
        rollback(&report, "ws01").contains(&("make sure some antivirus is on".into(), "ok".into()))
    );
}

/// A domain controller in a client whose reboots wait for the weekend
/// night window: msiexec's 3010 holds the host until the window opens
/// (the run's clock set six seconds before: the precheck takes some of them on a loaded machine), then it reboots and the
/// migration goes on.
#[test]
fn a_domain_controller_reboots_only_once_its_window_opens() {
    let mut table = defender_table();
    kes_removal_needs_reboot(&mut table);
    let fleet = Fleet::start(&["dc01"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "0", "{}");
    let inventory = fleet.scratch.read("inventory.yml").replace(
        "    vars: {}\n",
        "    reboot: window\n    reboot_window: { days: [sat], start: '22:00', end: '23:30', tz: UTC }\n    vars: {}\n",
    );
    fleet.scratch.write("inventory.yml", &inventory);
    // Saturday 2026-12-05, 21:59:54 UTC.
    let (run, report) = fleet.run_with_env(
        "windows-kes-to-defender.yml",
        &["--log", "log.jsonl"],
        &[("ORCHESTRATE_NOW", "2026-12-05T21:59:54Z")],
    );
    run.expect_code(0);
    assert_eq!(host(&report, "dc01")["status"], "succeeded");
    let step = host(&report, "dc01")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "remove Kaspersky Endpoint Security")
        .unwrap()
        .clone();
    assert!(step["duration_ms"].as_u64().unwrap() >= 2_500, "{step}");
    let log = fleet.scratch.read("log.jsonl");
    let waited = log
        .lines()
        .position(|l| l.contains(r#""event":"reboot_waiting""#))
        .expect("the reboot waited");
    let rebooted = log
        .lines()
        .position(|l| l.contains(r#""event":"rebooting""#))
        .unwrap();
    assert!(waited < rebooted);
    assert!(log.contains("2026-12-05T22:00:00"), "opens at 22:00");
    let answered = fleet.answered("dc01");
    assert_eq!(
        answered[position(&answered, "msiexec KES") + 1],
        "reboot",
        "{answered:?}"
    );
}
