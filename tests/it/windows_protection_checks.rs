//! The Windows playbooks' checks that used to say "protected" when the host
//! was not, and the prechecks that stop a host before anything changes when
//! the migration cannot work there (issue #13): a stale Security Center
//! entry, ForceDefenderPassiveMode, tenant-managed exclusions, Server 2012 R2
//! on the Defender playbook, and the Windows Server rollback order.
//!
//! Same simulated fleet as windows_playbook_flow.rs (tests/it/windows_fleet/):
//! each table entry answers as the Windows part it copies; the playbook, not
//! the answer, decides what happens next, and that is what is checked.

use serde_json::{Value, json};

use crate::windows_fleet::{
    Fleet, defender_table, entry, host, nothing_changed, os_info, position, rollback, set,
};

const EXCLUSIONS: &str =
    "{ exclusions: { paths: ['D:\\Dentrix\\Data', /opt/dentrix], processes: [DtxSvc.exe] } }";

/// Fails the Defender install on `hosts` at "carry exclusions over".
fn fail_exclusions(table: &mut [Value], hosts: &[&str]) {
    let failing: serde_json::Map<String, Value> = hosts
        .iter()
        .map(|h| {
            (
                h.to_string(),
                json!({ "exit_code": 1, "stdout": "",
                        "stderr": "Add-MpPreference : Operation failed with the following error: 0x800106ba\r\n" }),
            )
        })
        .collect();
    set(table, "add exclusions", json!({ "hosts": failing }));
}

#[test]
fn a_stale_kaspersky_security_center_entry_with_nothing_running_is_not_protection() {
    let mut table = defender_table();
    fail_exclusions(&mut table, &["ws01", "ws02"]);
    // ws01: Security Center still lists KES ("on") but no AVP service and no
    // klif driver run. ws02: KES really runs again (service and driver).
    set(
        &mut table,
        "antivirus engines",
        json!({ "hosts": {
            "ws01": { "stdout": r#"{"running":[],"stale":["Kaspersky Endpoint Security for Windows"],"stale_kaspersky":["Kaspersky Endpoint Security for Windows"]}"# },
            "ws02": { "stdout": r#"{"running":["Kaspersky"],"stale":[],"stale_kaspersky":[]}"# } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);

    // The stale entry is removed and Defender switched on: the entry alone
    // no longer counts as protection.
    let ws01 = fleet.answered("ws01");
    assert_eq!(
        &ws01[position(&ws01, "antivirus engines")..],
        [
            "antivirus engines",
            "clear stale entries",
            "some antivirus on"
        ]
    );
    assert!(
        fleet
            .script("ws01", "clear stale entries")
            .contains("$names = @('Kaspersky Endpoint Security for Windows')")
    );
    assert_eq!(host(&report, "ws01")["status"], "failed");
    assert!(rollback(&report, "ws01").contains(&(
        "clear stale Kaspersky entries from Security Center".into(),
        "ok".into()
    )));
    // A running engine is left alone, and no entry is touched.
    let ws02 = fleet.answered("ws02");
    assert_eq!(ws02.last().unwrap(), "antivirus engines");
    assert!(
        rollback(&report, "ws02")
            .contains(&("make sure some antivirus is on".into(), "skipped".into()))
    );
}

#[test]
fn a_policy_forcing_defender_passive_stops_the_host_in_precheck_saying_what_to_change() {
    let mut table = defender_table();
    let mut passive = os_info("Microsoft Windows 11 Pro", "22631", 1);
    passive["force_passive_mode"] = json!(true);
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "ws02": { "stdout": passive.to_string() } } }),
    );
    table.insert(
        0,
        entry(
            "stop: passive mode",
            r"ForceDefenderPassiveMode = 1\.",
            "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows Advanced Threat Protection\\ForceDefenderPassiveMode = 1.\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert!(
        !fleet
            .answered("ws01")
            .contains(&"stop: passive mode".to_string())
    );
    let ws02 = host(&report, "ws02");
    assert_eq!(ws02["status"], "failed");
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("stop if policy forces Defender into passive mode"),
        "{ws02}"
    );
    nothing_changed(&fleet.answered("ws02"));
    assert!(
        fleet
            .script("ws02", "stop: passive mode")
            .contains("set it to 0 (or remove it)")
    );
}

#[test]
fn exclusions_the_tenant_manages_stop_the_host_in_precheck_listing_what_to_set_there() {
    let mut table = defender_table();
    let mut no_merge = os_info("Microsoft Windows 11 Pro", "22631", 1);
    no_merge["local_admin_merge_disabled"] = json!(true);
    let mut tamper = os_info("Microsoft Windows 10 Enterprise", "19045", 1);
    tamper["tamper_protected_exclusions"] = json!(true);
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "ws01": { "stdout": no_merge.to_string() },
                           "ws02": { "stdout": tamper.to_string() } } }),
    );
    table.insert(
        0,
        entry(
            "stop: tenant exclusions",
            r"Set these exclusions in the tenant",
            "Set these exclusions in the tenant\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    for (name, why) in [
        ("ws01", "DisableLocalAdminMerge = 1"),
        ("ws02", "Tamper Protection protects exclusions"),
    ] {
        assert_eq!(host(&report, name)["status"], "failed", "{name}");
        nothing_changed(&fleet.answered(name));
        let stop = fleet.script(name, "stop: tenant exclusions");
        assert!(stop.contains(why), "{name}: {stop}");
        assert!(
            stop.contains("Write-Output '  path: D:\\Dentrix\\Data'"),
            "{stop}"
        );
        assert!(
            stop.contains("Write-Output '  process: DtxSvc.exe'"),
            "{stop}"
        );
        assert!(!stop.contains("/opt/dentrix"), "a Linux path: {stop}");
    }
}

#[test]
fn windows_server_2012_r2_stops_in_precheck_on_the_defender_playbook() {
    let mut table = defender_table();
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "srv12": { "stdout":
            os_info("Microsoft Windows Server 2012 R2 Standard", "9600", 3).to_string() } } }),
    );
    table.insert(
        0,
        entry(
            "stop: 2012 R2",
            r"has no Windows-Defender feature to enable",
            "Microsoft Windows Server 2012 R2 Standard (build 9600) has no Windows-Defender feature to enable.\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["srv12"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    let srv12 = host(&report, "srv12");
    assert_eq!(srv12["status"], "failed");
    assert!(
        srv12["error"]
            .as_str()
            .unwrap()
            .contains("stop on Windows Server 2012 R2"),
        "{srv12}"
    );
    let answered = fleet.answered("srv12");
    nothing_changed(&answered);
    assert!(!answered.contains(&"enable Defender feature".to_string()));
    assert!(
        fleet
            .script("srv12", "stop: 2012 R2")
            .contains("windows-kes-to-mde.yml")
    );
}

#[test]
fn a_failed_server_is_rolled_back_to_kaspersky_alone_with_defender_disabled_after_it() {
    let mut table = defender_table();
    fail_exclusions(&mut table, &["srv01"]);
    set(
        &mut table,
        "os info",
        json!({ "stdout": os_info("Microsoft Windows Server 2022 Standard", "20348", 3).to_string() }),
    );
    // Once KES is reinstalled its AVP service runs, with klif.
    set(
        &mut table,
        "antivirus engines",
        json!({ "stdout": r#"{"running":["Kaspersky"],"stale":[],"stale_kaspersky":[]}"# }),
    );
    // Dism exits 3010 when disabling the feature needs a reboot.
    table.insert(
        0,
        entry(
            "disable Defender",
            r"Kaspersky is not running again",
            "Kaspersky is back (AVP.KES.12.6.0.438); Windows-Defender feature state: Enabled\r\nDism /Disable-Feature exit code: 3010\r\n",
            3010,
        ),
    );
    let fleet = Fleet::start(&["srv01"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ kes_rollback_package: 'C:\\ProgramData\\MSP\\packages\\kes\\kes_win.msi', \
           exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    // Rolled back, to Kaspersky: which no longer gets updates in the US.
    assert_eq!(
        host(&report, "srv01")["status"],
        "rolled_back_to_unsupported_product"
    );
    let answered = fleet.answered("srv01");
    assert!(position(&answered, "enable Defender feature") < position(&answered, "add exclusions"));
    // Kaspersky first, then Defender off; nothing turns Defender on again.
    assert_eq!(
        &answered[position(&answered, "KES back")..],
        ["KES back", "disable Defender", "antivirus engines"]
    );
    assert!(!answered.contains(&"some antivirus on".to_string()));
    assert!(
        fleet
            .script("srv01", "disable Defender")
            .contains("Dism.exe /Online /Disable-Feature")
    );
    let records = rollback(&report, "srv01");
    assert!(records.contains(&(
        "disable Defender on Windows Server once Kaspersky is back".into(),
        "ok".into()
    )));
    assert!(records.contains(&("make sure some antivirus is on".into(), "skipped".into())));
}
