//! The shipped Linux and macOS playbooks as plans: they validate on the
//! example inventory, their dry runs show each host's exclusions exactly
//! (the old product's as rendered at run time), and hostile exclusion
//! values reach the rendered commands quoted, proven by running those
//! commands in a real `sh` (against the stand-in `mdatp` for Defender).
//! Nothing here connects anywhere; `linux_playbooks.rs` runs them over SSH.

use crate::harness;
use crate::linux_lab;

use harness::{Scratch, repo};
use linux_lab::{plan, planned_step, run_standin, sh};
use serde_json::{Value, json};

const CLAMAV: &str = "linux-kesl-to-clamav.yml";
const MDATP: &str = "linux-kesl-to-mdatp.yml";
const MACOS: &str = "macos-kes-to-mdatp.yml";

#[test]
fn every_linux_and_macos_playbook_validates_and_shows_its_exclusions_on_the_example_inventory() {
    let example = repo().join("inventory/example.yml");
    let inventory: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    for (playbook, os, old) in [
        (CLAMAV, "linux", "KESL"),
        (MDATP, "linux", "KESL"),
        (MACOS, "macos", "KES for Mac"),
    ] {
        let path = repo().join("playbooks").join(playbook);
        let run = harness::Run::new(harness::orchestrate_in(
            &repo(),
            &[
                "validate",
                path.to_str().unwrap(),
                "-i",
                "inventory/example.yml",
            ],
            &[],
        ));
        run.expect_code(0);
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            ("", ""),
            "{playbook}"
        );
        let plan = plan(&repo(), playbook, "inventory/example.yml");
        let mut planned = 0;
        for client in plan["clients"].as_array().unwrap() {
            let exclusions =
                &inventory["clients"][client["name"].as_str().unwrap()]["vars"]["exclusions"];
            // Linux hosts take the per-OS list where the client has one.
            let scoped = &exclusions[os];
            let paths = if scoped.is_object() {
                &scoped["paths"]
            } else {
                &exclusions["paths"]
            };
            for host in client["hosts"].as_array().unwrap() {
                if host["status"] != "planned" {
                    continue;
                }
                planned += 1;
                let from_inventory = planned_step(host, "apply exclusions from the inventory");
                let command = from_inventory["command"]
                    .as_str()
                    .expect("rendered when planned");
                for path in paths.as_array().unwrap() {
                    let path = path.as_str().unwrap();
                    let shown = path.starts_with('/') && path.chars().all(|c| c != '\'');
                    if shown {
                        let trimmed = path.trim_end_matches('/');
                        assert!(
                            command.contains(trimmed),
                            "{playbook}: {path} in\n{command}"
                        );
                    }
                    if path.contains(':') {
                        assert!(
                            !command.contains(path),
                            "{playbook}: Windows path {path} skipped"
                        );
                    }
                }
                let from_old = planned_step(host, &format!("apply exclusions exported from {old}"));
                assert!(
                    from_old["command"].is_null(),
                    "{playbook}: rendered at run time from the precheck's capture"
                );
            }
        }
        let expected = inventory["clients"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|c| c["hosts"].as_array().unwrap())
            .filter(|h| h["os"] == os)
            .count();
        assert_eq!(
            planned, expected,
            "{playbook}: every {os} host planned, no other"
        );
    }
}

/// Exclusions as MSP staff type and paste them.
const HOSTILE: &[&str] = &[
    "/srv/it's here",
    "/srv/$HOME and $(reboot)",
    "/srv/a;b && c|d",
    "/srv/O\u{2019}Brien files",
    "/srv/[x].*+?{1}^",
];

fn hostile_inventory(scratch: &Scratch, os: &str) {
    let lists = json!({
        "paths": HOSTILE,
        "processes": ["it's", "a b;c"],
        "extensions": ["$x"],
    });
    // Linux playbooks read the Linux lists; the macOS one the flat lists.
    let exclusions = if os == "linux" {
        json!({ "linux": lists })
    } else {
        lists
    };
    let inventory = json!({ "clients": { "hostile": {
        "vars": { "exclusions": exclusions, "dpkg_status_file": scratch.path().join("dpkg-status"),
           "clamd_conf_deb": scratch.path().join("clamd.conf") },
        "hosts": [{ "name": "h1", "address": "10.9.9.9", "os": os }],
    }}});
    scratch.write(
        "hostile.yml",
        &serde_json::to_string_pretty(&inventory).unwrap(),
    );
}

fn rendered(scratch: &Scratch, playbook: &str) -> String {
    let plan = plan(scratch.path(), playbook, "hostile.yml");
    let host = &plan["clients"][0]["hosts"][0];
    planned_step(host, "apply exclusions from the inventory")["command"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn hostile_exclusions_reach_the_rendered_commands_exactly() {
    let scratch = Scratch::new();
    // ClamAV: the rendered command, run by a real sh, writes one anchored
    // expression per path, and each matches its path and not a sibling.
    hostile_inventory(&scratch, "linux");
    std::fs::write(scratch.path().join("dpkg-status"), "").unwrap();
    std::fs::write(scratch.path().join("clamd.conf"), "LocalSocket /x\n").unwrap();
    let out = sh(&rendered(&scratch, CLAMAV), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = std::fs::read_to_string(scratch.path().join("clamd.conf")).unwrap();
    let regexes: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.strip_prefix("ExcludePath "))
        .collect();
    assert_eq!(regexes.len(), HOSTILE.len() + 1, "{conf}");
    for (path, regex) in HOSTILE.iter().zip(&regexes) {
        for (candidate, matches) in [
            (path.to_string(), true),
            (format!("{path}/sub/file"), true),
            (format!("{path}x"), false),
            (format!("/other{path}"), false),
        ] {
            let grep = std::process::Command::new("grep")
                .args(["-Eq", "--", regex])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .unwrap()
                        .write_all(format!("{candidate}\n").as_bytes())?;
                    c.wait()
                })
                .unwrap();
            assert_eq!(grep.success(), matches, "{regex} against {candidate:?}");
        }
    }
    assert_eq!(regexes[HOSTILE.len()], r"\.\$x$");
    // Defender, Linux and macOS: the rendered commands, run by a real sh
    // against the mdatp stand-in, add exactly the values typed.
    for (playbook, os) in [(MDATP, "linux"), (MACOS, "macos")] {
        hostile_inventory(&scratch, os);
        let state = tempfile::tempdir().unwrap();
        run_standin(state.path(), &["apt-get", "install", "mdatp"]);
        let path = format!(
            "{}:/usr/bin:/bin",
            repo().join("tests/standins/bin").display()
        );
        let out = sh(
            &rendered(&scratch, playbook),
            &[
                ("ORCH_STATE", state.path()),
                ("PATH", std::path::Path::new(&path)),
            ],
        );
        assert!(
            out.status.success(),
            "{playbook}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let added = std::fs::read_to_string(state.path().join("mdatp/exclusions")).unwrap();
        let mut expected: Vec<String> = HOSTILE.iter().map(|p| format!("folder\t{p}/")).collect();
        expected.extend([
            "process\tit's".into(),
            "process\ta b;c".into(),
            "extension\t.$x".into(),
        ]);
        assert_eq!(added.lines().collect::<Vec<_>>(), expected, "{playbook}");
    }
}

#[test]
fn the_dry_run_shows_each_hosts_exclusions_and_where_the_old_products_come_from() {
    let dry_run = |playbook: &str| {
        let path = repo().join("playbooks").join(playbook);
        let args = [
            "run",
            path.to_str().unwrap(),
            "-i",
            "inventory/example.yml",
            "--dry-run",
            "--limit",
            "bl-backup01",
        ];
        let run = harness::Run::new(harness::orchestrate_in(&repo(), &args, &[]));
        run.expect_code(0).stdout.clone()
    };
    for (playbook, applied) in [
        (
            CLAMAV,
            r"printf '%s\n' 'ExcludePath ^/srv/backup/partners'\'' archive(/|$)'",
        ),
        (
            MDATP,
            r"mdatp exclusion folder add --path '/srv/backup/partners'\'' archive/' --scope 'epp'",
        ),
    ] {
        let text = dry_run(playbook);
        assert!(text.contains(applied), "{playbook}: {applied}\n{text}");
        let exported = text
            .split("apply exclusions exported from KESL")
            .nth(1)
            .unwrap();
        let step_text = exported.split("rollback:").next().unwrap();
        assert!(
            exported.contains("rendered at run time from captured values")
                && step_text.contains("kesl_settings"),
            "{playbook}: KESL's exclusions come from the precheck's export"
        );
    }
}

/// Every command of a planned host: steps, their rollbacks, on_failure.
fn commands(host: &Value) -> Vec<(String, String)> {
    fn walk(steps: &Value, out: &mut Vec<(String, String)>) {
        for s in steps.as_array().into_iter().flatten() {
            if let Some(command) = s["command"].as_str() {
                out.push((
                    s["name"].as_str().unwrap_or("").to_string(),
                    command.to_string(),
                ));
            }
            walk(&s["rollback"], out);
        }
    }
    let mut out = Vec::new();
    walk(&host["steps"], &mut out);
    walk(&host["on_failure"], &mut out);
    out
}

#[test]
fn every_rendered_command_is_valid_sh_for_every_host_of_the_example() {
    for playbook in [CLAMAV, MDATP, MACOS] {
        let plan = plan(&repo(), playbook, "inventory/example.yml");
        let mut checked = 0;
        for client in plan["clients"].as_array().unwrap() {
            for host in client["hosts"].as_array().unwrap() {
                for (name, command) in commands(host) {
                    let out = std::process::Command::new("sh")
                        .args(["-n", "-c", &command])
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{playbook}, {}, `{name}`: {}\n{command}",
                        host["name"],
                        String::from_utf8_lossy(&out.stderr)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "{playbook}: {checked} commands checked");
    }
}

/// brightline-legal's exclusions are one flat list for its whole fleet:
/// its Linux backup host gets the list's POSIX paths, never its Windows
/// extensions (.pst, .ost) as blanket Linux exclusions.
#[test]
fn a_flat_client_list_gives_linux_hosts_only_its_posix_paths() {
    for playbook in [CLAMAV, MDATP] {
        let plan = plan(&repo(), playbook, "inventory/example.yml");
        let host = plan["clients"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["hosts"].as_array().unwrap())
            .find(|h| h["name"] == "bl-backup01")
            .unwrap();
        let command = planned_step(host, "apply exclusions from the inventory")["command"]
            .as_str()
            .unwrap();
        assert!(command.contains("/srv/backup/restic-repo"), "{command}");
        for windows in [".pst", ".ost", "wdDesktop", "Worldox"] {
            assert!(
                !command.contains(windows),
                "{playbook}: {windows} in\n{command}"
            );
        }
    }
}
