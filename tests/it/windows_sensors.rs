//! The replacement sensors of the Windows playbooks say "protected" only
//! when the vendor's own tooling would (issue #13): CrowdStrike Falcon once
//! the sensor has an agent id and is connected to the cloud (a running
//! CSFalconService alone is not enough), installed as CrowdStrike's script
//! installs it, with its exit 1244 explained.
//!
//! Same simulated fleet as windows_playbook_flow.rs (tests/it/windows_fleet/).

use serde_json::json;

use crate::windows_fleet::{Fleet, crowdstrike_table, host, position, rollback, set, steps};

const EXCLUSIONS: &str = "{ exclusions: { processes: [DtxSvc.exe] } }";

#[test]
fn a_running_falcon_service_without_agent_id_or_cloud_connection_is_not_protection() {
    let mut table = crowdstrike_table();
    // ws02: CSFalconService runs but the sensor never provisioned (no AG
    // value). ws03: provisioned, but its cloud connection is not up (a proxy
    // or TLS inspection in the way).
    set(
        &mut table,
        "sensor up",
        json!({ "hosts": {
            "ws02": { "stdout": r#"{"service":"Running","aid":"","connected":false}"# },
            "ws03": { "stdout": r#"{"service":"Running","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":false}"# } } }),
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
        // Nothing after it ran but the rollback: verify never said "protected".
        let answered = fleet.answered(name);
        assert!(!answered.contains(&"sensor health".to_string()), "{name}");
        assert!(
            rollback(&report, name)
                .iter()
                .any(|(n, _)| n == "put Kaspersky Endpoint Security back from the staged package"),
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
    for file in ["report.json"] {
        let text = std::fs::read_to_string(fleet.scratch.path().join(file)).unwrap();
        assert!(!text.contains("4f9d2c1b-prov-token"), "the token leaked");
    }
}
