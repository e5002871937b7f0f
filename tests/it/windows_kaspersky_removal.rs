//! Taking Kaspersky off a Windows host the way the field needs it (issue
//! #13): a rollback that puts Network Agent back managed by the client's
//! Administration Server (or a precheck that stops the host when it could
//! not), Kaspersky products found whatever the display language, and
//! installer logs that neither other users nor the log itself can leak the
//! KES password from.
//!
//! Same simulated fleet as windows_playbook_flow.rs (tests/it/windows_fleet/):
//! each table entry answers as the Windows part it copies; what is checked is
//! what the playbook sent and decided.

use serde_json::json;

use crate::windows_fleet::{Fleet, defender_table, entry, host, nothing_changed, position, set};

const AGENT_MSI: &str = "C:\\ProgramData\\MSP\\packages\\klnagent\\klnagent.msi";

#[test]
fn a_rollback_reinstalls_network_agent_for_the_inventory_s_administration_server() {
    let mut table = defender_table();
    set(
        &mut table,
        "add exclusions",
        json!({ "exit_code": 1, "stdout": "",
                "stderr": "Add-MpPreference : Operation failed with the following error: 0x800106ba\r\n" }),
    );
    let fleet = Fleet::start(&["ws01"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        &format!(
            "{{ klnagent_rollback_package: '{AGENT_MSI}', klnagent_server: ksc.acme.example, \
               exclusions: {{ processes: [DtxSvc.exe] }} }}"
        ),
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "failed", "rolled back");
    // The server is set: precheck let the host go on.
    let answered = fleet.answered("ws01");
    assert!(
        position(&answered, "msiexec Network Agent") < position(&answered, "Network Agent back")
    );
    let reinstall = fleet.script("ws01", "Network Agent back");
    assert!(
        reinstall.contains("$server = 'ksc.acme.example'"),
        "{reinstall}"
    );
    assert!(
        reinstall.contains(r#"EULA=1 SERVERADDRESS="{1}" /qn /norestart"#),
        "{reinstall}"
    );
}

#[test]
fn a_host_whose_network_agent_would_come_back_unmanaged_stops_in_precheck() {
    let mut table = defender_table();
    // Test-Path finds the staged package; the step then says why it stops.
    table.insert(
        0,
        entry(
            "stop: agent unmanaged",
            r"klnagent_server is not set:",
            "Network Agent package C:\\ProgramData\\MSP\\packages\\klnagent\\klnagent.msi is staged for rollback, but klnagent_server is not set:\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "ws03"], &table);
    // ws01 knows its server; ws02 does not; ws03 has a KSC stand-alone
    // package, which carries its server address.
    fleet.inventory_with_host_vars(
        "acme",
        r#"["100%"]"#,
        "100%",
        &format!("{{ klnagent_rollback_package: '{AGENT_MSI}', exclusions: {{ processes: [DtxSvc.exe] }} }}"),
        &[
            ("ws01", "{ klnagent_server: ksc.acme.example }"),
            (
                "ws03",
                "{ klnagent_rollback_package: 'C:\\ProgramData\\MSP\\packages\\klnagent\\setup.exe' }",
            ),
        ],
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert_eq!(host(&report, "ws03")["status"], "succeeded");
    for name in ["ws01", "ws03"] {
        assert!(
            !fleet
                .answered(name)
                .contains(&"stop: agent unmanaged".to_string()),
            "{name}"
        );
    }
    let ws02 = host(&report, "ws02");
    assert_eq!(ws02["status"], "failed");
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("stop if a rollback would put Network Agent back unmanaged"),
        "{ws02}"
    );
    nothing_changed(&fleet.answered("ws02"));
    assert!(
        fleet
            .script("ws02", "stop: agent unmanaged")
            .contains("Set klnagent_server (the Administration Server address)")
    );
}

#[test]
fn a_french_network_agent_is_found_by_its_product_code_and_removed() {
    let mut table = defender_table();
    // A French install as the Uninstall keys list it (community listing of a
    // French KSC 12 fleet: the agent's DisplayName is localised, its
    // publisher "Kaspersky" and its MSI product code are not).
    let french = json!({
        "products": [
            { "name": "Kaspersky Endpoint Security for Windows", "publisher": "AO Kaspersky Lab",
              "version": "11.6.0.394", "code": "{7EC66A9F-0A49-4DC0-A9E8-460333EA8013}",
              "key": "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{7EC66A9F-0A49-4DC0-A9E8-460333EA8013}" },
            { "name": "Agent d'administration de Kaspersky Security Center", "publisher": "Kaspersky",
              "version": "12.0.0.7734", "code": "{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}",
              "key": "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}" }
        ],
        "kes": ["{7EC66A9F-0A49-4DC0-A9E8-460333EA8013}"],
        "agent": ["{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}"],
        "unhandled": []
    });
    set(
        &mut table,
        "find products",
        json!({ "stdout": french.to_string() }),
    );
    let fleet = Fleet::start(&["ws01"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "0",
        "{ exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(0);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");

    // Found by publisher, told apart by product code and the French name,
    // not by an English DisplayName pattern.
    let find = fleet.script("ws01", "find products");
    assert!(find.contains("$_.Publisher -like '*Kaspersky*'"), "{find}");
    assert!(
        find.contains("$agentCodes = @('{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}')"),
        "{find}"
    );
    assert!(find.contains("\"Agent d'administration de Kaspersky*\""));
    assert!(!find.contains("DisplayName -like 'Kaspersky*'"), "{find}");
    // The agent went after KES, by its code, and verify found nothing left.
    let answered = fleet.answered("ws01");
    assert!(position(&answered, "msiexec KES") < position(&answered, "msiexec Network Agent"));
    let agent = fleet.script("ws01", "msiexec Network Agent");
    assert!(
        agent.contains("foreach ($code in @('{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}'))"),
        "{agent}"
    );
    assert!(answered.contains(&"no Kaspersky left".to_string()));
}

#[test]
fn installer_logs_go_to_a_folder_only_administrators_and_system_read_without_the_password() {
    let mut table = defender_table();
    // icacls on a folder the account may not change the ACL of: "Access is
    // denied." and exit 5 (Win32 ERROR_ACCESS_DENIED).
    set(
        &mut table,
        "log folder",
        json!({ "hosts": { "ws02": { "exit_code": 1,
            "stdout": "icacls failed (5) on C:\\ProgramData\\MSP\\orchestrate\\logs\r\n" } } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ klnagent_password_protected: true, exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run_with_env(
        "windows-kes-to-defender.yml",
        &[],
        &[("KLNAGENT_PASSWORD", "agent-Secret-2")],
    );
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");

    // The folder is made (by SID: group names are localised) before any
    // uninstall runs; where it cannot be, the host stops with nothing changed.
    let folder = fleet.script("ws01", "log folder");
    assert!(
        folder.contains(
            "icacls.exe $dir /inheritance:r /grant:r '*S-1-5-32-544:(OI)(CI)F' '*S-1-5-18:(OI)(CI)F'"
        ),
        "{folder}"
    );
    assert!(folder.contains("Join-Path 'C:\\ProgramData\\MSP\\orchestrate' 'logs'"));
    let ws01 = fleet.answered("ws01");
    assert!(position(&ws01, "log folder") < position(&ws01, "msiexec KES"));
    assert_eq!(host(&report, "ws02")["status"], "failed");
    nothing_changed(&fleet.answered("ws02"));

    // Each verbose log is written there and loses both passwords (the KES
    // one, and the agent's as typed and as the hex Windows Installer is
    // given) as soon as the uninstall is done with it.
    for (response, log, hidden) in [
        (
            "msiexec KES",
            "kes-uninstall-",
            "$hide = @($pw, ($pw -replace '\"', '\"\"'))",
        ),
        (
            "msiexec Network Agent",
            "klnagent-uninstall-",
            "$hide = @($pw, $hex)",
        ),
    ] {
        let text = fleet.script("ws01", response);
        assert!(
            text.contains("$logDir = Join-Path 'C:\\ProgramData\\MSP\\orchestrate' 'logs'"),
            "{text}"
        );
        assert!(text.contains(log));
        assert!(text.contains(hidden), "{text}");
        let run_at = text
            .find("$rc = Remove-MsiProduct $code $props $log")
            .unwrap();
        let hide_at = text.find("Hide-Secrets $log $hide").unwrap();
        assert!(run_at < hide_at, "stripped after the uninstall ran: {text}");
    }
    let text = std::fs::read_to_string(fleet.scratch.path().join("report.json")).unwrap();
    assert!(!text.contains("kes-Secret-1") && !text.contains("agent-Secret-2"));
}

#[test]
fn the_kaspersky_passwords_are_on_no_command_line_and_the_installer_codes_still_map() {
    let mut table = defender_table();
    // What MsiConfigureProductExW returns (the Windows Installer error
    // codes, as msiexec would exit): ws02 removed but a reboot is needed
    // (3010, ERROR_SUCCESS_REBOOT_REQUIRED), ws03 already gone (1605,
    // ERROR_UNKNOWN_PRODUCT), ws04 removed and the installer started the
    // reboot (1641, ERROR_SUCCESS_REBOOT_INITIATED). (A fatal 1603 is any
    // other code: the step fails after its retries, a minute apart - too
    // slow for this test; the script's `default { exit $rc }` is checked.)
    let kes = |rc: i32| {
        json!({ "exit_code": rc, "stdout": format!(
            "MsiConfigureProductEx {{8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C}} absent -> {rc} (log: C:\\ProgramData\\MSP\\orchestrate\\logs\\kes-uninstall-8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C.log)\r\n") })
    };
    set(
        &mut table,
        "msiexec KES",
        json!({ "hosts": { "ws02": kes(3010), "ws03": kes(1605), "ws04": kes(1641) } }),
    );
    let fleet = Fleet::start(&["ws01", "ws02", "ws03", "ws04"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ klnagent_password_protected: true, exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run_with_env(
        "windows-kes-to-defender.yml",
        &[],
        &[("KLNAGENT_PASSWORD", "agent-Secret-2")],
    );
    run.expect_code(0);
    for name in ["ws01", "ws02", "ws03", "ws04"] {
        assert_eq!(host(&report, name)["status"], "succeeded", "{name}");
    }
    for name in ["ws02", "ws04"] {
        let answered = fleet.answered(name);
        assert_eq!(
            position(&answered, "msiexec KES") + 1,
            position(&answered, "reboot"),
            "{name} rebooted after the uninstall: {answered:?}"
        );
    }
    for name in ["ws01", "ws03"] {
        assert!(
            !fleet.answered(name).contains(&"reboot".to_string()),
            "{name}"
        );
    }

    // The passwords reached the host only inside the scripts, which the
    // transport sends on the shell's standard input; the uninstall runs
    // through msi.dll in that PowerShell process, so no msiexec (or any
    // other) command line carries KLPASSWD or KLUNINSTPASSWD.
    let hex: String = "agent-Secret-2"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .map(|b| format!("{b:02X}"))
        .collect();
    let received = fleet.received();
    assert!(
        received
            .iter()
            .any(|r| r.response.as_deref() == Some("msiexec KES"))
    );
    assert!(
        received
            .iter()
            .any(|r| r.kind == "powershell" && !r.command_line.is_empty()),
        "the endpoint logs each command's command line"
    );
    for r in &received {
        for secret in [
            "kes-Secret-1",
            "agent-Secret-2",
            hex.as_str(),
            "KLPASSWD",
            "KLUNINSTPASSWD",
        ] {
            assert!(
                !r.command_line.contains(secret),
                "{secret} on the command line of {} on {}: {}",
                r.kind,
                r.host,
                r.command_line
            );
        }
    }
    for (response, secret) in [
        ("msiexec KES", "$pw = 'kes-Secret-1'"),
        ("msiexec Network Agent", "$pw = 'agent-Secret-2'"),
    ] {
        let script = fleet.script("ws01", response);
        assert!(script.contains(secret), "{script}");
        assert!(!script.contains("msiexec.exe"), "{script}");
        assert!(!script.contains("Start-Process"), "{script}");
        assert!(
            script.contains("[OrchestrateMsi]::MsiConfigureProductEx($code, 0, 2, (\"REBOOT=ReallySuppress \" + $props).Trim())"),
            "{script}"
        );
        assert!(script.contains("[OrchestrateMsi]::MsiSetInternalUI(2, [IntPtr]::Zero)"));
        assert!(script.contains("[OrchestrateMsi]::MsiEnableLog($logMode, $log, 2)"));
        // The compiled C# (Add-Type writes it to a temporary file) holds
        // no secret: the values are passed when it is called.
        let csharp = &script
            [script.find("Add-Type -TypeDefinition @'").unwrap()..script.find("\n'@").unwrap()];
        assert!(!csharp.contains("Secret"), "{csharp}");
        // 1618 (another installation running): wait and try again; every
        // other code is the step's exit code, which ok_codes and
        // reboot_codes map.
        assert!(script.contains("if ($rc -ne 1618) { break }"));
        assert!(script.contains("default { exit $rc }"));
    }
    let text = std::fs::read_to_string(fleet.scratch.path().join("report.json")).unwrap();
    assert!(!text.contains("kes-Secret-1") && !text.contains("agent-Secret-2"));
}

#[test]
fn a_host_in_constrained_language_mode_stops_in_precheck_rather_than_put_passwords_on_msiexec() {
    let mut table = defender_table();
    // An AppLocker / WDAC policy puts remote PowerShell in
    // ConstrainedLanguage, where Add-Type is refused (Microsoft,
    // about_Language_Modes): the Windows Installer API cannot be reached.
    let mut constrained = crate::windows_fleet::os_info("Microsoft Windows 11 Pro", "22631", 1);
    constrained["language_mode"] = json!("ConstrainedLanguage");
    set(
        &mut table,
        "os info",
        json!({ "hosts": { "ws02": { "stdout": constrained.to_string() } } }),
    );
    table.insert(
        0,
        entry(
            "stop: constrained language",
            r"needs Add-Type \(FullLanguage\)",
            "PowerShell runs in ConstrainedLanguage mode on this host (an AppLocker or WDAC policy):\r\n",
            1,
        ),
    );
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "100%",
        "{ exclusions: { processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    run.expect_code(1);
    assert_eq!(host(&report, "ws01")["status"], "succeeded");
    assert!(
        !fleet
            .answered("ws01")
            .contains(&"stop: constrained language".to_string())
    );
    let ws02 = host(&report, "ws02");
    assert_eq!(ws02["status"], "failed");
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("stop if PowerShell runs in Constrained Language mode"),
        "{ws02}"
    );
    nothing_changed(&fleet.answered("ws02"));
    assert!(
        fleet
            .script("ws02", "stop: constrained language")
            .contains("PowerShell runs in ConstrainedLanguage mode on this host")
    );
}
