//! Who is logged on before a reboot (issue #13: "no logged-on-user check
//! today; domain controllers and RDS hosts are rebooted at once"): the
//! runner asks the host right before it reboots (Windows `quser`, POSIX
//! `who`), records the sessions with the reboot in the report, the event
//! log and the journal, names them in the `reboot: ask` question, and
//! `reboot_with_users: ask | refuse` asks first or does not reboot.
//!
//! Windows hosts of the simulated fleet (tests/it/windows_fleet/), whose
//! `quser` answers as Microsoft documents it; the POSIX side is asked on a
//! real sshd in reboot_policy.rs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::terminal::Terminal;
use crate::windows_fleet::{
    Fleet, WINRM_PASSWORD, defender_table, host, kes_removal_needs_reboot, logged_on_users,
    position, set,
};

/// KES's removal asks for a reboot (MsiConfigureProductEx 3010) on every host.
fn table_with_reboot(users: &[(&str, Value)]) -> Vec<Value> {
    let mut table = defender_table();
    kes_removal_needs_reboot(&mut table);
    let hosts: serde_json::Map<String, Value> = users
        .iter()
        .map(|(h, answer)| (h.to_string(), answer.clone()))
        .collect();
    set(
        &mut table,
        "runner: logged-on users",
        json!({ "hosts": hosts }),
    );
    table
}

fn reboots(report: &Value, name: &str) -> Vec<Value> {
    host(report, name)["reboots"].as_array().unwrap().clone()
}

#[test]
fn sessions_cut_by_a_reboot_are_recorded_with_it_and_refuse_keeps_a_host_in_use_up() {
    let table = table_with_reboot(&[
        (
            "rds01",
            logged_on_users(&[("alice", "rdp-tcp#3"), ("carol", "")]),
        ),
        ("rds02", logged_on_users(&[("bob", "console")])),
    ]);
    let fleet = Fleet::start(&["ws01", "rds01", "rds02"], &table);
    fleet.inventory_with_host_vars(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ exclusions: { processes: [DtxSvc.exe] } }",
        &[],
    );
    // rds02 must not be rebooted while someone works on it.
    let inventory = fleet
        .scratch
        .read("inventory.yml")
        .replace("name: rds02,", "name: rds02, reboot_with_users: refuse,");
    fleet.scratch.write("inventory.yml", &inventory);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &["--log", "log.jsonl"]);
    run.expect_code(1);

    // ws01: nobody was logged on; recorded as such.
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    let ws01 = reboots(&report, "ws01");
    assert_eq!(ws01[0]["step"], "remove Kaspersky Endpoint Security");
    assert_eq!(ws01[0]["logged_on"], json!([]));
    // rds01 (reboot_with_users: reboot, the default) rebooted, and the
    // report says whose sessions it cut.
    assert_eq!(host(&report, "rds01")["status"], "succeeded");
    let rds01 = reboots(&report, "rds01");
    assert_eq!(
        rds01[0]["logged_on"],
        json!(["alice (rdp-tcp#3, Active)", "carol (Disc)"]),
        "{rds01:?}"
    );
    assert!(rds01[0]["at"].as_str().is_some());
    let answered = fleet.answered("rds01");
    assert_eq!(answered[position(&answered, "msiexec KES") + 1], "reboot");
    // The live lines and the event log say it as the reboot starts.
    assert!(
        run.stdout
            .contains("rebooting acme/rds01; logged on: alice (rdp-tcp#3, Active), carol (Disc)"),
        "{}",
        run.stdout
    );
    // The summary at the end lists the reboots that cut a session.
    let summary = &run.stdout[run
        .stdout
        .rfind("reboots with someone logged on:")
        .expect("a list of reboots")..];
    assert!(
        summary.contains("acme/rds01: logged on: alice (rdp-tcp#3, Active), carol (Disc)"),
        "{summary}"
    );
    assert!(!summary.contains("ws01"), "nobody was on ws01: {summary}");
    let log = fleet.scratch.read("log.jsonl");
    let rebooting: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "rebooting" && e["host"] == "rds01")
        .collect();
    assert_eq!(rebooting[0]["logged_on"][0], "alice (rdp-tcp#3, Active)");

    // rds02: bob is on the console; not rebooted, rolled back.
    let rds02 = host(&report, "rds02");
    assert_eq!(rds02["status"], "failed", "{rds02}");
    let step = rds02["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "remove Kaspersky Endpoint Security")
        .unwrap();
    assert!(
        step["detail"].as_str().unwrap().contains(
            "logged on: bob (console, Active); the host was not rebooted (reboot_with_users: refuse)"
        ),
        "{step}"
    );
    assert!(!fleet.answered("rds02").contains(&"reboot".to_string()));
    assert!(reboots(&report, "rds02").is_empty());

    // The journal keeps the event as the run wrote it: the report rebuilt
    // from it says the same.
    let run_id = fleet.scratch.newest_run_id();
    let rebuilt =
        fleet
            .scratch
            .orchestrate(&["report", &run_id, "--format", "json", "-o", "again.json"]);
    rebuilt.expect_code(0);
    let again: Value = serde_json::from_str(&fleet.scratch.read("again.json")).unwrap();
    assert_eq!(
        reboots(&again, "rds01")[0]["logged_on"],
        rds01[0]["logged_on"]
    );
}

#[test]
fn reboot_with_users_ask_names_them_on_the_terminal_and_no_keeps_the_host_up() {
    let table = table_with_reboot(&[("rds01", logged_on_users(&[("alice", "rdp-tcp#3")]))]);
    let fleet = Fleet::start(&["rds01"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ exclusions: { processes: [DtxSvc.exe] } }",
    );
    let inventory = fleet
        .scratch
        .read("inventory.yml")
        .replace("name: rds01,", "name: rds01, reboot_with_users: ask,");
    fleet.scratch.write("inventory.yml", &inventory);
    let playbook = crate::harness::repo().join("playbooks/windows-kes-to-defender.yml");
    let mut command = fleet.scratch.command(&[
        "run",
        playbook.to_str().unwrap(),
        "-i",
        "inventory.yml",
        "--report-json",
        "report.json",
    ]);
    command.envs([
        ("WINRM_PASSWORD", WINRM_PASSWORD),
        ("KES_PASSWORD", "kes-Secret-1"),
    ]);
    let mut terminal = Terminal::spawn(command);
    // The first question is the run's own "go ahead?" before anything
    // changes; then the reboot's.
    terminal.wait_for("[y/N]", Duration::from_secs(60));
    if !terminal.screen().contains("reboot now?") {
        terminal.type_line("y");
    }
    terminal.wait_for("reboot now?", Duration::from_secs(90));
    let screen = terminal.screen();
    assert!(
        screen.contains(
            "acme/rds01: reboot now? (step `remove Kaspersky Endpoint Security` asks for a reboot; logged on: alice (rdp-tcp#3, Active)) [y/N]"
        ),
        "{screen}"
    );
    terminal.type_line("n");
    assert_eq!(
        terminal.exit_code(Duration::from_secs(90)),
        Some(1),
        "{}",
        terminal.screen()
    );
    let report: Value = serde_json::from_str(&fleet.scratch.read("report.json")).unwrap();
    let rds01 = host(&report, "rds01");
    assert_eq!(rds01["status"], "failed", "{rds01}");
    // A refused reboot is final: the uninstall (retries: 2) is not run
    // again only to ask again.
    let step = rds01["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "remove Kaspersky Endpoint Security")
        .unwrap();
    assert_eq!(step["attempts"], 1, "{step}");
    assert!(
        step["detail"]
            .as_str()
            .unwrap()
            .contains("the operator did not confirm the reboot"),
        "{step}"
    );
    assert!(!fleet.answered("rds01").contains(&"reboot".to_string()));
    assert!(reboots(&report, "rds01").is_empty());
}
