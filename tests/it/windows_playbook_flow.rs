//! The shipped Windows playbooks, run for real through `orchestrate` over
//! WinRM against a simulated fleet.
//!
//! No PowerShell runs here, so each host is the WinRM test endpoint
//! answering every script of the playbook from a table of responses shaped
//! like what Windows prints (registry product lists, `Get-MpComputerStatus`
//! as JSON, msiexec exit codes, netsh), and logging every script it
//! received. The tests check what an operator checks: which scripts reached
//! which host in which order (canary first, reboot where msiexec asked for
//! one, rollback on the host that failed, nothing changed on a host with
//! UltraAV or under --check) and the JSON report, for the Defender and
//! CrowdStrike playbooks (Defender for Endpoint: windows_sensors.rs).
//! Tables: tests/it/windows_fleet/.

use crate::windows_fleet;

use serde_json::{Value, json};
use windows_fleet::{
    Fleet, crowdstrike_table, defender_status, defender_table, entry, host, os_info, position, set,
    steps,
};

const EXCLUSIONS: &str =
    "{ exclusions: { paths: ['D:\\Dentrix\\Data'], processes: [DtxSvc.exe] } }";

#[test]
fn canary_first_then_the_rest_with_a_reboot_when_msiexec_asks_for_one() {
    let mut table = defender_table();
    // The canary's KES uninstall wants a reboot (3010); srv01 is a Windows
    // Server whose Defender feature must be enabled (Dism, 3010 too).
    set(
        &mut table,
        "msiexec KES",
        json!({ "hosts": { "ws01": { "exit_code": 3010,
            "stdout": "MsiConfigureProductEx {8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C} absent -> 3010\r\n" } } }),
    );
    // ws02's Network Agent installer restarts the machine itself (1641).
    set(
        &mut table,
        "msiexec Network Agent",
        json!({ "hosts": { "ws02": { "exit_code": 1641, "reboot": true,
            "stdout": "MsiConfigureProductEx {2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B} absent -> 1641\r\n" } } }),
    );
    let server_info = os_info("Microsoft Windows Server 2022 Standard", "20348", 3);
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "srv01": { "stdout": server_info.to_string() } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "srv01"], &table);
    fleet.inventory("acme", r#"[1, "100%"]"#, "0", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(0);
    assert_eq!(report["status"], "succeeded");
    let waves: Vec<&Value> = report["clients"][0]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["hosts"])
        .collect();
    assert_eq!(waves, [&json!(["ws01"]), &json!(["ws02", "srv01"])]);

    // The canary is done, verify included, before the next wave starts.
    let received = fleet.received();
    let baseline = |r: &&windows_fleet::Received| {
        r.response
            .as_deref()
            .is_some_and(|n| n.starts_with("baseline: "))
    };
    let canary_last = received
        .iter()
        .rfind(|r| r.host == "ws01" && !baseline(r))
        .unwrap();
    let rest_first = received.iter().find(|r| r.host != "ws01").unwrap();
    assert_eq!(canary_last.response.as_deref(), Some("firewall on"));
    // Its baseline, compared after verify, before the next wave too.
    let canary_baseline = received
        .iter()
        .rfind(|r| r.host == "ws01" && baseline(r))
        .unwrap();
    assert!(canary_last.seq < canary_baseline.seq);
    assert!(canary_baseline.seq < rest_first.seq, "canary first");
    assert!(canary_last.seq < rest_first.seq, "canary first");
    assert!(
        received
            .iter()
            .all(|r| r.kind != "powershell" || r.response.is_some()),
        "every script was one the table knows"
    );

    // msiexec 3010 on the canary: the host rebooted, then the run went on
    // with the Network Agent, and nothing was tried twice.
    let ws01 = fleet.answered("ws01");
    assert_eq!(
        ws01,
        [
            "find products",
            "os info",
            "firewall state",
            "firewall export",
            "log folder",
            "msiexec KES",
            "reboot",
            "msiexec Network Agent",
            "pending reboot",
            "turn Defender on",
            "confirm real-time",
            "add exclusions",
            "update signatures",
            "Defender status",
            "exclusions read back",
            "no Kaspersky left",
            "firewall on",
        ]
    );
    assert!(fleet.received().iter().any(|r| r.host == "ws01"
        && r.kind == "reboot"
        && r.script.starts_with("Restart-Computer")));
    // ws02 rebooted by itself (1641) and the run went on; the Server took
    // the DISM path and rebooted.
    let ws02 = fleet.answered("ws02");
    assert_eq!(
        position(&ws02, "msiexec Network Agent") + 1,
        position(&ws02, "reboot")
    );
    assert_eq!(ws02[position(&ws02, "reboot") + 1], "pending reboot");
    assert!(!ws02.contains(&"enable Defender feature".to_string()));
    let srv01 = fleet.answered("srv01");
    assert_eq!(
        position(&srv01, "enable Defender feature") + 1,
        position(&srv01, "reboot")
    );
    assert!(position(&srv01, "reboot") < position(&srv01, "turn Defender on"));

    // The KES password went to the host (as a PowerShell literal) but not
    // into the report; the exclusions went exactly as the inventory has them.
    let kes = received
        .iter()
        .find(|r| r.response.as_deref() == Some("msiexec KES"))
        .unwrap();
    assert!(
        kes.script.contains("$pw = 'kes-Secret-1'"),
        "{}",
        kes.script
    );
    assert!(
        !std::fs::read_to_string(fleet.scratch.path().join("report.json"))
            .unwrap()
            .contains("kes-Secret-1")
    );
    let add = received
        .iter()
        .find(|r| r.response.as_deref() == Some("add exclusions"))
        .unwrap();
    assert!(
        add.script
            .contains("@(@('D:\\Dentrix\\Data') | Where-Object"),
        "{}",
        add.script
    );
    assert!(
        add.script
            .contains("Add-MpPreference -ExclusionProcess 'DtxSvc.exe'")
    );

    for name in ["ws01", "ws02", "srv01"] {
        let h = host(&report, name);
        assert_eq!(h["status"], "succeeded", "{name}");
        assert!(
            h["protection_gap_ms"].as_u64().is_some(),
            "{name}: gap measured"
        );
        assert!(h["rollback"].as_array().is_none_or(|r| r.is_empty()));
    }
    let ws01_steps = steps(&report, "ws01");
    assert!(ws01_steps.contains(&("remove Kaspersky Endpoint Security".into(), "ok".into())));
    let kes_step = host(&report, "ws01")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "remove Kaspersky Endpoint Security")
        .unwrap();
    assert_eq!(kes_step["exit_code"], 3010);
    assert_eq!(kes_step["attempts"], 1);
    assert!(ws01_steps.contains(&("EICAR detection test".into(), "skipped".into())));
    assert!(ws01_steps.contains(&(
        "enable the Windows-Defender feature (Windows Server)".into(),
        "skipped".into()
    )));
}

#[test]
fn an_install_step_failing_on_one_host_rolls_that_host_back() {
    let mut table = defender_table();
    set(
        &mut table,
        "add exclusions",
        json!({ "hosts": { "ws02": { "exit_code": 1, "stdout": "",
            "stderr": "Add-MpPreference : Operation failed with the following error: 0x800106ba\r\n" } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "ws03"], &table);
    fleet.inventory(
        "acme",
        r#"[1, "100%"]"#,
        "1",
        &EXCLUSIONS.replace(
            "{ exclusions",
            "{ kes_rollback_package: 'C:\\ProgramData\\MSP\\packages\\kes\\kes_win.msi', exclusions",
        ),
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(report["status"], "failed");
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert_eq!(host(&report, "ws03")["status"], "succeeded");

    let ws02 = host(&report, "ws02");
    // Rolled back, to Kaspersky: which no longer gets updates in the US.
    assert_eq!(ws02["status"], "rolled_back_to_unsupported_product");
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("carry exclusions over to Defender"),
        "{}",
        ws02["error"]
    );
    // Newest first: the failed step's own undo, then KES's and the agent's
    // way back, then on_failure making sure some antivirus is on.
    let rollback: Vec<(&str, &str)> = ws02["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rollback,
        [
            ("remove the exclusions added by this run", "ok"),
            ("put Network Agent back from the staged package", "ok"),
            (
                "put Kaspersky Endpoint Security back from the staged package",
                "ok"
            ),
            (
                "disable Defender on Windows Server once Kaspersky is back",
                "skipped"
            ),
            ("read which antivirus engines run", "ok"),
            (
                "clear stale Kaspersky entries from Security Center",
                "skipped"
            ),
            ("make sure some antivirus is on", "ok"),
        ]
    );
    let answered = fleet.answered("ws02");
    let after_failure = &answered[position(&answered, "add exclusions") + 1..];
    assert_eq!(
        after_failure,
        [
            "remove exclusions",
            "Network Agent back",
            "KES back",
            "antivirus engines",
            "some antivirus on"
        ]
    );
    assert!(!fleet.answered("ws01").contains(&"KES back".to_string()));
}

#[test]
fn real_time_protection_off_after_install_fails_verify() {
    let mut table = defender_table();
    let mut off = defender_status();
    off["RealTimeProtectionEnabled"] = json!(false);
    set(
        &mut table,
        "Defender status",
        json!({ "hosts": { "ws01": { "stdout": off.to_string() } } }),
    );
    let fleet = Fleet::start(&["ws01"], &table);
    fleet.inventory("acme", r#"[1, "100%"]"#, "0", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    let ws01 = host(&report, "ws01");
    assert_eq!(ws01["status"], "failed");
    let verify = ws01["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["phase"] == "verify" && s["status"] == "failed")
        .expect("a failed verify step");
    assert_eq!(
        verify["name"],
        "Defender is active, real-time on, signatures current"
    );
    assert!(
        verify["detail"].as_str().unwrap_or("").contains("until"),
        "{verify}"
    );
    // The same table with real-time protection on passes (the canary test):
    // the verdict is the playbook's, on what Windows reported, which the
    // report shows.
    assert!(
        verify["stdout"]
            .as_str()
            .unwrap()
            .contains(r#""RealTimeProtectionEnabled":false"#),
        "{verify}"
    );
    // Nothing ran after the failed check but the rollback and on_failure.
    let answered = fleet.answered("ws01");
    assert_eq!(answered.last().unwrap(), "some antivirus on");
    assert!(!answered.contains(&"exclusions read back".to_string()));
    assert_eq!(client_status(&report), "halted");
}

fn client_status(report: &Value) -> &str {
    report["clients"][0]["status"].as_str().unwrap()
}

#[test]
fn crowdstrike_installs_with_the_cid_secret_and_checks_the_sensor_service() {
    let mut table = crowdstrike_table();
    set(
        &mut table,
        "sensor health",
        json!({ "hosts": { "ws02": { "stdout": r#"{"service":"Stopped","start":"Automatic","driver":"Running","product":"CrowdStrike Windows Sensor","version":"7.18.18905.0","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":false}"# } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"[1, "100%"]"#, "1", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-crowdstrike.yml", &["--log", "events.jsonl"]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert!(
        host(&report, "ws01")["protection_gap_ms"]
            .as_u64()
            .is_some()
    );
    // ws02's sensor service is stopped: verify fails, the host is rolled back
    // and on_failure makes sure some antivirus runs.
    assert_eq!(host(&report, "ws02")["status"], "failed");
    assert!(steps(&report, "ws02").contains(&(
        "read the sensor's service, driver, agent id and cloud connection".into(),
        "failed".into()
    )));
    assert_eq!(fleet.answered("ws02").last().unwrap(), "some antivirus on");

    let received = fleet.received();
    let install = received
        .iter()
        .find(|r| r.response.as_deref() == Some("install sensor"))
        .unwrap();
    assert!(
        install
            .script
            .contains("$key = '0123456789ABCDEF0123456789ABCDEF-12'")
    );
    assert!(
        install
            .script
            .contains("'/install /quiet /noreboot CID={0}' -f $key")
    );
    for file in ["report.json", "events.jsonl"] {
        let text = std::fs::read_to_string(fleet.scratch.path().join(file)).unwrap();
        assert!(
            !text.contains("0123456789ABCDEF0123456789ABCDEF"),
            "the CID leaked into {file}"
        );
    }
    assert!(!run.stdout.contains("0123456789ABCDEF0123456789ABCDEF"));
    // The exclusions went to the file for the Falcon console, before any change.
    let export = received
        .iter()
        .find(|r| r.response.as_deref() == Some("export exclusions"))
        .unwrap();
    assert!(
        export.script.contains("value = 'D:\\Dentrix\\Data'"),
        "{}",
        export.script
    );
    let ws01 = fleet.answered("ws01");
    assert!(position(&ws01, "export exclusions") < position(&ws01, "msiexec KES"));
    assert!(position(&ws01, "install sensor") < position(&ws01, "sensor up"));
}

#[test]
fn a_host_with_ultraav_stops_in_precheck_before_anything_changes() {
    let mut table = defender_table();
    let products = json!({
        "products": [{ "name": "UltraAV", "version": "2.1.0.4", "code": null,
                       "key": "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\UltraAV" }],
        "kes": [], "agent": [], "unhandled": ["UltraAV"] });
    set(
        &mut table,
        "find products",
        json!({ "hosts": { "ws02": { "stdout": products.to_string() } } }),
    );
    table.insert(
        0,
        entry(
            "stop: unhandled products",
            r"This host has security products this playbook does not remove",
            "This host has security products this playbook does not remove:\r\n  - UltraAV\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"[1, "100%"]"#, "1", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    let ws02 = host(&report, "ws02");
    assert_eq!(ws02["status"], "failed");
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("stop on products this playbook does not handle")
    );
    let answered = fleet.answered("ws02");
    // Then only on_failure: what runs, and Defender on since nothing does.
    assert_eq!(
        &answered[position(&answered, "stop: unhandled products") + 1..],
        ["antivirus engines", "some antivirus on"]
    );
    windows_fleet::nothing_changed(&answered);
    let stop = fleet
        .received()
        .into_iter()
        .find(|r| r.response.as_deref() == Some("stop: unhandled products"))
        .unwrap();
    assert!(
        stop.script.contains("Write-Output '  - UltraAV'"),
        "{}",
        stop.script
    );
    assert!(stop.script.contains("UltraAV is a consumer product"));
}

#[test]
fn check_on_the_canary_runs_only_the_read_only_precheck() {
    let table = crowdstrike_table();
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"[1, "100%"]"#, "0", EXCLUSIONS);
    let (run, report) = fleet.run(
        "windows-kes-to-crowdstrike.yml",
        &["--limit", "ws01", "--check"],
    );
    run.expect_code(0);
    assert_eq!(report["check"], true);
    assert_eq!(
        fleet.answered("ws01"),
        [
            "find products",
            "os info",
            "firewall state",
            "firewall export",
            "log folder",
            "installer staged",
            "sensor before",
            "export exclusions"
        ]
    );
    assert!(fleet.answered("ws02").is_empty(), "--limit ws01");
    assert!(
        fleet.received().iter().all(|r| r.response.is_some()),
        "nothing unanswered ran"
    );
}
