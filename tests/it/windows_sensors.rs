//! The replacement sensors of the Windows playbooks say "protected" only
//! when the vendor's own tooling would (issue #13): CrowdStrike Falcon once
//! the sensor has an agent id and is connected to the cloud (a running
//! CSFalconService alone is not enough), installed as CrowdStrike's script
//! installs it, with its exit 1244 explained; Defender for Endpoint in
//! Microsoft's order: onboarded and the sensor seen active, Defender passive
//! beside Kaspersky, before Kaspersky is removed; downlevel servers through
//! Microsoft's Install.ps1; Windows Home stopped, the Sense client added on
//! Windows 11 24H2.
//!
//! Same simulated fleet as windows_playbook_flow.rs (tests/it/windows_fleet/).

use serde_json::json;

use crate::windows_fleet::{
    Fleet, MDE_ORG, crowdstrike_table, host, mde_state, mde_table, nothing_changed, os_info,
    position, rollback, set, steps,
};

const EXCLUSIONS: &str = "{ exclusions: { processes: [DtxSvc.exe] } }";

/// The step of common/windows-sensor-state.yml (verify and on_failure).
const SENSOR_STATE: &str = "read the sensor's service, driver, agent id and cloud connection";

#[test]
fn a_running_falcon_service_without_agent_id_or_cloud_connection_is_not_protection() {
    let mut table = crowdstrike_table();
    // ws02: CSFalconService and the CSAgent driver run but the sensor never
    // provisioned (no AG value). ws03: provisioned, but its cloud connection
    // is not up (a proxy or TLS inspection in the way). They stay so after
    // the rollback: the sensor is not removed (uninstall protection).
    let unprovisioned = r#"{"service":"Running","start":"Automatic","driver":"Running","product":"CrowdStrike Windows Sensor","version":"7.18.18905.0","aid":"","connected":false}"#;
    let offline = r#"{"service":"Running","start":"Automatic","driver":"Running","product":"CrowdStrike Windows Sensor","version":"7.18.18905.0","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":false}"#;
    set(
        &mut table,
        "sensor up",
        json!({ "hosts": {
            "ws02": { "stdout": r#"{"service":"Running","aid":"","connected":false}"# },
            "ws03": { "stdout": r#"{"service":"Running","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":false}"# } } }),
    );
    set(
        &mut table,
        "sensor health",
        json!({ "hosts": { "ws02": { "stdout": unprovisioned }, "ws03": { "stdout": offline } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "ws03"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-crowdstrike.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    for name in ["ws02", "ws03"] {
        let h = host(&report, name);
        assert_eq!(h["status"], "failed", "{name}: {h}");
        assert!(
            steps(&report, name).contains(&(
                "sensor has an agent id and is connected to the cloud".into(),
                "failed".into()
            )),
            "{name}"
        );
        // Verify never ran: it never said "protected".
        assert!(
            !steps(&report, name).iter().any(|(n, _)| n == SENSOR_STATE),
            "{name}"
        );
        let undone = rollback(&report, name);
        assert!(
            undone
                .iter()
                .any(|(n, _)| n == "put Kaspersky Endpoint Security back from the staged package"),
            "{name}"
        );
        // on_failure read the sensor again and did not count its running
        // service and driver as protection: Defender was switched on.
        assert!(
            undone.contains(&(SENSOR_STATE.into(), "ok".into())),
            "{name}: {undone:?}"
        );
        assert!(
            undone.contains(&("make sure some antivirus is on".into(), "ok".into())),
            "{name}: {undone:?}"
        );
        let answered = fleet.answered(name);
        assert_eq!(
            &answered[answered.len() - 3..],
            ["sensor health", "antivirus engines", "some antivirus on"],
            "{name}"
        );
    }
    // The protection gap closes only where the sensor really is up.
    assert!(
        host(&report, "ws01")["protection_gap_ms"]
            .as_u64()
            .is_some()
    );
}

#[test]
fn after_a_rollback_a_provisioned_connected_falcon_sensor_counts_and_defender_is_left_alone() {
    let mut table = crowdstrike_table();
    // ws02's sensor is fine but its firewall was switched off: verify fails
    // after the sensor check, the host is rolled back, and the sensor (not
    // removed by the rollback) still protects it.
    set(
        &mut table,
        "firewall on",
        json!({ "hosts": { "ws02": { "exit_code": 1,
            "stdout": "Domain: before=True now=False\r\nFAIL: firewall profile(s) off: Domain (backup in C:\\ProgramData\\MSP\\orchestrate)\r\n" } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", EXCLUSIONS);
    let (run, report) = fleet.run("windows-kes-to-crowdstrike.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert_eq!(host(&report, "ws02")["status"], "failed");
    let undone = rollback(&report, "ws02");
    assert!(
        undone.contains(&(SENSOR_STATE.into(), "ok".into())),
        "{undone:?}"
    );
    assert!(
        undone.contains(&("make sure some antivirus is on".into(), "skipped".into())),
        "{undone:?}"
    );
    let answered = fleet.answered("ws02");
    assert!(!answered.contains(&"some antivirus on".to_string()));
    // The sensor's own Security Center entry is left to the playbook's
    // judgement on `sensor` (its name and its binary's folder), not counted
    // as a running engine by the script.
    let engines = fleet.script("ws02", "antivirus engines");
    assert!(
        engines.contains("$sensorLike = '*CrowdStrike Windows Sensor*'"),
        "{engines}"
    );
    assert!(engines.contains("-f 'CSFalconService'"), "{engines}");
}

#[test]
fn the_sensor_installs_as_crowdstrike_s_script_does_and_exit_1244_says_check_the_token() {
    let mut table = crowdstrike_table();
    set(
        &mut table,
        "install sensor",
        json!({ "hosts": { "ws02": { "exit_code": 1244,
            "stdout": "sensor installer exit code: 1244\r\n" } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ sensor_token_secret: FALCON_TOKEN, exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run_with_env(
        "windows-kes-to-crowdstrike.yml",
        &[],
        &[("FALCON_TOKEN", "4f9d2c1b-prov-token")],
    );
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    let install = fleet.script("ws01", "install sensor");
    assert!(
        install.contains("'/install /quiet /noreboot CID={0}' -f $key"),
        "{install}"
    );
    assert!(install.contains("$token = '4f9d2c1b-prov-token'"));
    assert!(install.contains("if ($token) { $arguments += ' ProvToken=' + $token }"));
    assert!(
        !fleet
            .answered("ws01")
            .contains(&"stop: cloud unreachable".to_string())
    );

    let ws02 = host(&report, "ws02");
    assert_eq!(ws02["status"], "failed");
    assert!(
        ws02["error"].as_str().unwrap().contains(
            "stop if the sensor cannot reach the CrowdStrike cloud (installer exit 1244)"
        ),
        "{ws02}"
    );
    let stop = fleet.script("ws02", "stop: cloud unreachable");
    assert!(
        stop.contains("Check the installation token (ProvToken, from the secret FALCON_TOKEN)"),
        "{stop}"
    );
    let answered = fleet.answered("ws02");
    assert_eq!(
        position(&answered, "install sensor") + 1,
        position(&answered, "stop: cloud unreachable")
    );
    let text = std::fs::read_to_string(fleet.scratch.path().join("report.json")).unwrap();
    assert!(!text.contains("4f9d2c1b-prov-token"), "the token leaked");
}

fn mde_vars(extra: &str) -> String {
    format!(
        "{{ mde_onboarding_script: 'D:\\MSP\\mde\\WindowsDefenderATPOnboardingScript.cmd', \
           mde_org_id: {MDE_ORG}, exclusions: {{ processes: [DtxSvc.exe] }}{extra} }}"
    )
}

#[test]
fn defender_for_endpoint_is_onboarded_and_seen_active_before_kaspersky_is_removed() {
    let mut table = mde_table();
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "srv01": { "stdout":
            os_info("Microsoft Windows Server 2022 Standard", "20348", 3).to_string() } } }),
    );
    let fleet = Fleet::start(&["ws01", "srv01"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "0", &mde_vars(""));
    let (run, report) = fleet.run("windows-kes-to-mde.yml", &[]);
    run.expect_code(0);
    for name in ["ws01", "srv01"] {
        assert_eq!(host(&report, name)["status"], "succeeded", "{name}");
        let a = fleet.answered(name);
        // Microsoft's phases: onboard, see the sensor active, then remove
        // Kaspersky, then Defender active.
        assert!(position(&a, "state before") < position(&a, "onboarding script"));
        assert!(position(&a, "onboarding script") < position(&a, "sensor active"));
        assert!(
            position(&a, "sensor active") < position(&a, "msiexec KES"),
            "{name}: {a:?}"
        );
        assert!(position(&a, "msiexec KES") < position(&a, "turn Defender on"));
        assert!(position(&a, "turn Defender on") < position(&a, "state after"));
    }
    // The Server: Defender passive before its feature comes, active only
    // once Kaspersky is gone.
    let srv = fleet.answered("srv01");
    assert!(position(&srv, "passive mode set") < position(&srv, "enable Defender feature"));
    assert!(position(&srv, "enable Defender feature") < position(&srv, "onboarding script"));
    assert!(position(&srv, "msiexec KES") < position(&srv, "passive mode lifted"));
    assert!(position(&srv, "passive mode lifted") < position(&srv, "turn Defender on"));
    let ws = fleet.answered("ws01");
    for absent in [
        "passive mode set",
        "passive mode lifted",
        "Sense capability",
        "Install.ps1",
    ] {
        assert!(!ws.contains(&absent.to_string()), "ws01: {absent}");
    }
    let onboard = fleet.script("ws01", "onboarding script");
    assert!(
        onboard.contains("$script = 'D:\\MSP\\mde\\WindowsDefenderATPOnboardingScript.cmd'"),
        "{onboard}"
    );
    // The protection gap opens only at the KES removal, after onboarding.
    assert!(
        host(&report, "ws01")["protection_gap_ms"]
            .as_u64()
            .is_some()
    );
}

#[test]
fn a_sensor_that_is_not_active_or_reports_to_another_tenant_stops_the_host_with_kaspersky_in_place()
{
    let mut table = mde_table();
    let mut stopped = mde_state(false, MDE_ORG);
    stopped["AMRunningMode"] = json!("Normal");
    let mut other = mde_state(true, "00000000-aaaa-bbbb-cccc-000000000000");
    other["AMRunningMode"] = json!("Passive Mode");
    set(
        &mut table,
        "sensor active",
        json!({ "hosts": { "ws02": { "stdout": stopped.to_string() },
                           "ws03": { "stdout": other.to_string() } } }),
    );
    // ws03 was onboarded to another tenant before: not onboarded again.
    set(
        &mut table,
        "state before",
        json!({ "hosts": { "ws03": { "stdout":
            mde_state(true, "00000000-aaaa-bbbb-cccc-000000000000").to_string() } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "ws03"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", &mde_vars(""));
    let (run, report) = fleet.run("windows-kes-to-mde.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    for name in ["ws02", "ws03"] {
        assert_eq!(host(&report, name)["status"], "failed", "{name}");
        assert!(
            steps(&report, name).contains(&(
                "the sensor is active, Defender passive beside Kaspersky".into(),
                "failed".into()
            )),
            "{name}"
        );
        // Kaspersky was never touched: it still protects the host.
        nothing_changed(&fleet.answered(name));
    }
    assert!(
        steps(&report, "ws03")
            .contains(&("onboard to Defender for Endpoint".into(), "skipped".into()))
    );
    assert!(
        rollback(&report, "ws02")
            .contains(&("offboard from Defender for Endpoint".into(), "ok".into()))
    );
}

#[test]
fn windows_home_stops_in_precheck_and_windows_11_24h2_gets_the_sense_client_first() {
    let mut table = mde_table();
    let mut home = os_info("Microsoft Windows 11 Famille", "26100", 1);
    home["sku"] = json!(101);
    set(
        &mut table,
        "os info",
        json!({ "hosts": {
            "home01": { "stdout": home.to_string() },
            "ws24a": { "stdout": os_info("Microsoft Windows 11 Pro", "26100", 1).to_string() },
            "ws24b": { "stdout": os_info("Microsoft Windows 11 Pro", "26100", 1).to_string() } } }),
    );
    // ws24a came without the Sense client (no Sense service); ws24b has it.
    let mut no_sense = mde_state(false, MDE_ORG);
    no_sense["Sense"] = json!("missing");
    set(
        &mut table,
        "state before",
        json!({ "hosts": { "ws24a": { "stdout": no_sense.to_string(), "times": 1 } } }),
    );
    let fleet = Fleet::start(&["home01", "ws24a", "ws24b"], &table);
    fleet.inventory("acme", r#"["100%"]"#, "100%", &mde_vars(""));
    let (run, report) = fleet.run("windows-kes-to-mde.yml", &[]);
    run.expect_code(1);

    let home01 = host(&report, "home01");
    assert_eq!(home01["status"], "failed");
    assert!(
        home01["error"]
            .as_str()
            .unwrap()
            .contains("stop on Windows Home (cannot be onboarded to Defender for Endpoint)"),
        "{home01}"
    );
    let answered = fleet.answered("home01");
    nothing_changed(&answered);
    assert!(!answered.contains(&"onboarding script".to_string()));

    assert_eq!(host(&report, "ws24a")["status"], "succeeded");
    let a = fleet.answered("ws24a");
    assert!(position(&a, "Sense capability") < position(&a, "onboarding script"));
    assert!(fleet.script("ws24a", "Sense capability").contains(
        "DISM.exe /Online /Add-Capability /CapabilityName:Microsoft.Windows.Sense.Client~~~~"
    ));
    assert_eq!(host(&report, "ws24b")["status"], "succeeded");
    assert!(
        !fleet
            .answered("ws24b")
            .contains(&"Sense capability".to_string())
    );
}

#[test]
fn downlevel_servers_are_onboarded_by_microsoft_s_install_ps1_run_again_after_its_reboot() {
    let mut table = mde_table();
    set(
        &mut table,
        "os info",
        json!({ "hosts": {
            "srv12": { "stdout": os_info("Microsoft Windows Server 2012 R2 Standard", "9600", 3).to_string() },
            "srv16": { "stdout": os_info("Microsoft Windows Server 2016 Standard", "14393", 3).to_string() } } }),
    );
    // Install.ps1 on srv12: a hotfix asked for a reboot (ERR_PENDING_REBOOT,
    // 12: "reboot and run again"); srv16 installs in one go.
    set(
        &mut table,
        "Install.ps1",
        json!({ "hosts": { "srv12": { "exit_code": 12, "stdout": "Install.ps1 exit code: 12\r\n" } } }),
    );
    let fleet = Fleet::start(&["srv12", "srv16"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "0",
        &mde_vars(", mde_downlevel_installer: 'D:\\MSP\\mde\\Install.ps1'"),
    );
    let (run, report) = fleet.run("windows-kes-to-mde.yml", &[]);
    run.expect_code(0);
    for name in ["srv12", "srv16"] {
        assert_eq!(host(&report, name)["status"], "succeeded", "{name}");
        let a = fleet.answered(name);
        assert!(position(&a, "downlevel prerequisites") < position(&a, "passive mode set"));
        assert!(position(&a, "passive mode set") < position(&a, "Install.ps1"));
        assert!(position(&a, "Install.ps1") < position(&a, "sensor active"));
        assert!(position(&a, "sensor active") < position(&a, "msiexec KES"));
        for absent in ["onboarding script", "enable Defender feature"] {
            assert!(!a.contains(&absent.to_string()), "{name}: {absent}");
        }
    }
    let srv12 = fleet.answered("srv12");
    assert_eq!(
        position(&srv12, "Install.ps1") + 1,
        position(&srv12, "reboot")
    );
    assert_eq!(
        position(&srv12, "reboot") + 1,
        position(&srv12, "Install.ps1 again")
    );
    assert!(
        !fleet
            .answered("srv16")
            .contains(&"Install.ps1 again".to_string())
    );
    let install = fleet.script("srv16", "Install.ps1");
    assert!(
        install.contains(
            "-File $installer -Passive -OnboardingScript 'D:\\MSP\\mde\\WindowsDefenderATPOnboardingScript.cmd'"
        ),
        "{install}"
    );
    assert!(install.contains("$installer = 'D:\\MSP\\mde\\Install.ps1'"));
}
