//! The shipped Windows playbooks, planned: each one validates and dry-runs
//! on the example inventory, the dry run shows per host the exclusions that
//! will be applied as the exact commands, and a client's exclusions reach
//! the PowerShell as single-quoted literals however hostile the values.

use crate::harness;

use harness::{Scratch, repo};
use serde_json::Value;

const WINDOWS_PLAYBOOKS: [&str; 3] = [
    "playbooks/windows-kes-to-defender.yml",
    "playbooks/windows-kes-to-mde.yml",
    "playbooks/windows-kes-to-crowdstrike.yml",
];

fn in_repo(args: &[&str]) -> harness::Run {
    harness::Run::new(harness::orchestrate_in(&repo(), args, &[]))
}

/// Every command of a planned host: steps, their rollbacks, on_failure.
fn commands(host: &Value) -> Vec<String> {
    let mut all = Vec::new();
    for step in host["steps"].as_array().unwrap() {
        all.extend(step["command"].as_str().map(str::to_string));
        for r in step["rollback"].as_array().into_iter().flatten() {
            all.extend(r["command"].as_str().map(str::to_string));
        }
    }
    for r in host["on_failure"].as_array().into_iter().flatten() {
        all.extend(r["command"].as_str().map(str::to_string));
    }
    all
}

fn step<'a>(host: &'a Value, name: &str) -> &'a Value {
    host["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("step {name}"))
}

fn hosts(plan: &Value) -> impl Iterator<Item = &Value> {
    plan["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hosts"].as_array().unwrap())
}

#[test]
fn every_windows_playbook_validates_and_dry_runs_on_the_example_inventory() {
    for playbook in WINDOWS_PLAYBOOKS {
        let validate = in_repo(&["validate", playbook, "-i", "inventory/example.yml"]);
        validate.expect_code(0);
        assert_eq!(validate.stdout.trim(), "", "{playbook}: no problems");

        let text = in_repo(&["run", playbook, "-i", "inventory/example.yml", "--dry-run"]);
        text.expect_code(0);
        assert!(text.stdout.contains("Nothing is contacted"), "{playbook}");

        let plan = in_repo(&[
            "run",
            playbook,
            "-i",
            "inventory/example.yml",
            "--dry-run",
            "--format",
            "json",
        ])
        .expect_code(0)
        .json();
        let mut planned = 0;
        for host in hosts(&plan) {
            let name = host["name"].as_str().unwrap();
            if host["os"] != "windows" {
                assert_eq!(host["status"], "skipped", "{playbook}: {name}");
                continue;
            }
            planned += 1;
            assert_eq!(host["status"], "planned", "{playbook}: {name}");
            let phases: Vec<&str> = host["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["phase"].as_str().unwrap())
                .fold(Vec::new(), |mut v, p| {
                    if v.last() != Some(&p) {
                        v.push(p);
                    }
                    v
                });
            // Defender for Endpoint goes in Microsoft's order: onboarded
            // (and the sensor seen active) before Kaspersky is removed.
            let expected: &[&str] = if playbook.ends_with("mde.yml") {
                &["precheck", "onboard", "uninstall", "install", "verify"]
            } else {
                &["precheck", "uninstall", "install", "verify"]
            };
            assert_eq!(phases, expected, "{playbook}");
            // Reading the host is allowed in --check; the first change is not.
            let precheck = host["steps"].as_array().unwrap().iter();
            for s in precheck.filter(|s| s["phase"] == "precheck") {
                assert_eq!(s["check_safe"], true, "{playbook}: {}", s["name"]);
            }
            // on_failure: (the replacement sensor's state, read as verify
            // reads it,) which engines run, then the stale Security Center
            // entries, then Defender on if none runs.
            let on_failure: Vec<&str> = host["on_failure"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap())
                .collect();
            let mut expected = vec![
                "read which antivirus engines run",
                "clear stale Kaspersky entries from Security Center",
                "make sure some antivirus is on",
            ];
            if playbook.ends_with("crowdstrike.yml") {
                expected.insert(
                    0,
                    "read the sensor's service, driver, agent id and cloud connection",
                );
            }
            assert_eq!(on_failure, expected, "{playbook}");
        }
        assert!(planned > 60, "{playbook}: the example's Windows hosts");
    }
}

#[test]
fn the_dry_run_shows_each_host_the_exact_exclusions_it_will_get() {
    let expected = [
        (
            "playbooks/windows-kes-to-defender.yml",
            "carry exclusions over to Defender",
        ),
        (
            "playbooks/windows-kes-to-mde.yml",
            "carry exclusions over to Defender",
        ),
        (
            "playbooks/windows-kes-to-crowdstrike.yml",
            "export exclusions for the Falcon console",
        ),
    ];
    for (playbook, step_name) in expected {
        let plan = in_repo(&[
            "run",
            playbook,
            "-i",
            "inventory/example.yml",
            "--dry-run",
            "--format",
            "json",
            "--limit",
            "acme-frontdesk01",
        ])
        .expect_code(0)
        .json();
        let host = hosts(&plan).next().unwrap();
        let command = step(host, step_name)["command"].as_str().unwrap();
        for value in [
            "'D:\\Dentrix\\Data'",
            "'C:\\Program Files (x86)\\Dentrix'",
            "'D:\\XRay Images\\Sensor Cache'",
            "'DtxSvc.exe'",
            "'sqlservr.exe'",
            "'.mdf'",
        ] {
            assert!(command.contains(value), "{playbook}: {value} in\n{command}");
        }
        if !playbook.contains("crowdstrike") {
            assert!(command.contains(
                "Add-MpPreference -ExclusionProcess 'DtxSvc.exe','dtxsrv.exe','sqlservr.exe'"
            ));
            assert!(command.contains("Add-MpPreference -ExclusionExtension '.ldf','.mdf','.dcm'"));
        }
    }
}

#[test]
fn hostile_exclusion_values_reach_the_powershell_as_quoted_literals() {
    let scratch = Scratch::new();
    scratch.write(
        "inventory.yml",
        r#"clients:
  hostile:
    vars:
      exclusions:
        paths:
          - 'C:\Program Files\It''s Here'
          - 'D:\Data$Cache;Remove-Item C:\ -Recurse'
          - 'E:\Bob’s Files'
          - '/srv/posix path'
        processes: ['evil''; Stop-Computer; ''.exe', '$(Get-Date).exe']
        extensions: ['.x;y']
    hosts:
      - { name: ws01, address: 10.0.0.1, os: windows, transport: winrm }
"#,
    );
    // The value as PowerShell needs it inside '...': ' and ’ doubled.
    let hostile = [
        (
            "C:\\Program Files\\It's Here",
            "'C:\\Program Files\\It''s Here'",
        ),
        (
            "D:\\Data$Cache;Remove-Item C:\\ -Recurse",
            "'D:\\Data$Cache;Remove-Item C:\\ -Recurse'",
        ),
        ("E:\\Bob\u{2019}s Files", "'E:\\Bob\u{2019}\u{2019}s Files'"),
        (
            "evil'; Stop-Computer; '.exe",
            "'evil''; Stop-Computer; ''.exe'",
        ),
        ("$(Get-Date).exe", "'$(Get-Date).exe'"),
        (".x;y", "'.x;y'"),
    ];
    for playbook in WINDOWS_PLAYBOOKS {
        let playbook = repo().join(playbook);
        let playbook = playbook.to_str().unwrap();
        let plan = scratch
            .orchestrate(&[
                "run",
                playbook,
                "-i",
                "inventory.yml",
                "--dry-run",
                "--format",
                "json",
            ])
            .expect_code(0)
            .json();
        let host = hosts(&plan).next().unwrap();
        let all = commands(host).join("\n");
        for (raw, quoted) in hostile {
            assert!(all.contains(quoted), "{playbook}: {quoted} in\n{all}");
            // Everywhere the value appears, it is that whole literal.
            let inner = &quoted[1..quoted.len() - 1];
            for (at, _) in all.match_indices(inner) {
                let before = all[..at].chars().last();
                let after = all[at + inner.len()..].chars().next();
                assert!(
                    before == Some('\'') && after == Some('\''),
                    "{playbook}: {raw:?} appears unquoted at byte {at}:\n{}",
                    &all[at.saturating_sub(80)..(at + inner.len() + 40).min(all.len())]
                );
            }
            if raw.contains('\'') {
                assert!(!all.contains(raw), "{playbook}: {raw:?} with a lone quote");
            }
        }
    }
}

#[test]
fn a_host_with_its_own_exclusions_gets_exactly_those() {
    // Host vars win over client vars as a whole: the dry run shows each host
    // the list it will get, so an operator sees the difference before a run.
    let scratch = Scratch::new();
    scratch.write(
        "inventory.yml",
        r#"clients:
  acme:
    vars:
      exclusions: { paths: ['D:\Client Data'], processes: [client.exe] }
    hosts:
      - { name: ws01, address: 10.0.0.1, os: windows }
      - { name: sql01, address: 10.0.0.2, os: windows, vars: { exclusions: { paths: ['F:\SQL Data'], extensions: [.mdf] } } }
"#,
    );
    let playbook = repo().join(WINDOWS_PLAYBOOKS[0]);
    let plan = scratch
        .orchestrate(&[
            "run",
            playbook.to_str().unwrap(),
            "-i",
            "inventory.yml",
            "--dry-run",
            "--format",
            "json",
        ])
        .expect_code(0)
        .json();
    let add = |host: &str| -> String {
        let h = hosts(&plan).find(|h| h["name"] == host).unwrap();
        step(h, "carry exclusions over to Defender")["command"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ws01 = add("ws01");
    assert!(ws01.contains("@(@('D:\\Client Data') | Where-Object"));
    assert!(ws01.contains("Add-MpPreference -ExclusionProcess 'client.exe'"));
    assert!(!ws01.contains("SQL Data"));
    let sql01 = add("sql01");
    assert!(sql01.contains("@(@('F:\\SQL Data') | Where-Object"));
    assert!(sql01.contains("Add-MpPreference -ExclusionExtension '.mdf'"));
    assert!(!sql01.contains("Client Data") && !sql01.contains("client.exe"));
}
