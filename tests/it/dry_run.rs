//! `orchestrate run --dry-run`: the plan, shown exactly, touching nothing.
//!
//! A dry run lists every client, its waves with their hosts, and each
//! host's steps as the commands that would run (rollback and on_failure
//! included), with secrets as `***`. `--format json` gives the same plan
//! for machines.

use crate::harness;

use std::collections::BTreeSet;

use harness::{Scratch, repo};
use serde_json::Value;

fn shipped_playbooks() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("playbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| format!("playbooks/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    found.sort();
    assert!(found.len() >= 2, "at least two shipped playbooks");
    found
}

fn dry_run(playbook: &str, extra: &[&str], env: &[(&str, &str)]) -> harness::Run {
    let mut args = vec!["run", playbook, "-i", "inventory/example.yml", "--dry-run"];
    args.extend_from_slice(extra);
    harness::Run::new(harness::orchestrate_in(&repo(), &args, env))
}

fn example_inventory() -> Value {
    let text = std::fs::read_to_string(repo().join("inventory/example.yml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[test]
fn every_shipped_playbook_validates_and_plans_on_the_example_inventory() {
    for playbook in shipped_playbooks() {
        let run = harness::Run::new(harness::orchestrate_in(
            &repo(),
            &["validate", &playbook, "-i", "inventory/example.yml"],
            &[],
        ));
        run.expect_code(0);
        assert_eq!(run.stdout, "", "validate prints nothing but problems");
        assert_eq!(run.stderr, "", "validate prints nothing but problems");
    }
}

#[test]
fn the_json_plan_has_every_client_and_host_in_waves_that_match_the_text() {
    let inventory = example_inventory();
    let clients = inventory["clients"].as_object().unwrap();
    for playbook in shipped_playbooks() {
        let plan = dry_run(&playbook, &["--format", "json"], &[])
            .expect_code(0)
            .json();
        let text = dry_run(&playbook, &[], &[]).expect_code(0).stdout.clone();
        let planned_clients: Vec<&str> = plan["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let inventory_clients: Vec<&str> = clients.keys().map(String::as_str).collect();
        assert_eq!(
            planned_clients, inventory_clients,
            "{playbook}: clients in inventory order"
        );

        for client in plan["clients"].as_array().unwrap() {
            let name = client["name"].as_str().unwrap();
            let inventory_hosts: Vec<&str> = clients[name]["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["name"].as_str().unwrap())
                .collect();
            let hosts = client["hosts"].as_array().unwrap();
            let listed: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
            assert_eq!(
                listed, inventory_hosts,
                "{playbook}/{name}: every host, in order"
            );

            // Each planned host is in exactly the wave the host says, and
            // waves are in inventory order.
            let mut in_waves = Vec::new();
            for (i, wave) in client["waves"].as_array().unwrap().iter().enumerate() {
                assert_eq!(wave["index"], i + 1);
                let members: Vec<&str> = wave["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h.as_str().unwrap())
                    .collect();
                assert!(!members.is_empty(), "no empty wave");
                for m in &members {
                    let host = hosts.iter().find(|h| h["name"] == *m).unwrap();
                    assert_eq!(host["wave"], i + 1, "{m}");
                    assert_eq!(host["status"], "planned");
                }
                assert!(
                    text.contains(&format!("wave {} ({} host", i + 1, members.len()))
                        && text.contains(&members.join(", ")),
                    "{playbook}/{name}: the text shows wave {} as {members:?}",
                    i + 1
                );
                in_waves.extend(members);
            }
            let planned: Vec<&str> = hosts
                .iter()
                .filter(|h| h["status"] == "planned")
                .map(|h| h["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                in_waves, planned,
                "{playbook}/{name}: waves cover the planned hosts once"
            );
            for host in hosts.iter().filter(|h| h["status"] == "skipped") {
                assert!(host["wave"].is_null());
                assert!(host["steps"].as_array().unwrap().is_empty());
                assert!(
                    text.contains(host["name"].as_str().unwrap()),
                    "skipped hosts are said so"
                );
            }
            for host in hosts.iter().filter(|h| h["status"] == "planned") {
                let steps = host["steps"].as_array().unwrap();
                assert!(!steps.is_empty());
                for step in steps {
                    assert!(step["phase"].is_string() && step["name"].is_string());
                    assert!(step["command"].is_string() || step["command"].is_null());
                }
            }
        }
    }
}

#[test]
fn the_canary_wave_comes_first_and_the_client_override_wins() {
    let inventory = example_inventory();
    let plan = dry_run(
        "playbooks/windows-kes-to-defender.yml",
        &["--format", "json"],
        &[],
    )
    .expect_code(0)
    .json();
    for client in plan["clients"].as_array().unwrap() {
        let waves = client["waves"].as_array().unwrap();
        assert_eq!(
            waves[0]["hosts"].as_array().unwrap().len(),
            1,
            "one canary host first"
        );
        let name = client["name"].as_str().unwrap();
        if let Some(sizes) = inventory["clients"][name]["waves"].as_array() {
            // The client's own wave list is used: its counts are the wave sizes.
            for (size, wave) in sizes.iter().zip(waves) {
                if let Some(n) = size.as_u64() {
                    assert!(wave["hosts"].as_array().unwrap().len() as u64 <= n);
                }
            }
        }
    }
}

#[test]
fn exclusions_from_the_inventory_reach_the_commands_quoted() {
    let inventory = example_inventory();
    let plan = dry_run(
        "playbooks/windows-kes-to-defender.yml",
        &["--format", "json"],
        &[],
    )
    .expect_code(0)
    .json();
    let mut checked = 0;
    for client in plan["clients"].as_array().unwrap() {
        let name = client["name"].as_str().unwrap();
        let Some(paths) = inventory["clients"][name]["vars"]["exclusions"]["paths"].as_array()
        else {
            continue;
        };
        let host = client["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["status"] == "planned")
            .unwrap();
        let commands: String = host["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["command"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for path in paths {
            let path = path.as_str().unwrap();
            // PowerShell single-quoted: quotes doubled, nothing else touched.
            let quoted = format!("'{}'", path.replace('\'', "''"));
            assert!(
                commands.contains(&quoted),
                "{name}: {quoted} in the Add-MpPreference step"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the example inventory has exclusions to check");
}

#[test]
fn secrets_are_shown_as_stars_wherever_a_command_is_shown() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        r#"name: secrets
phases:
  - name: uninstall
    steps:
      - name: remove with password
        powershell: msiexec /x PRODUCT KLPASSWD={{ secret(name="KES_PASSWORD") | ps_quote }} /qn
        rollback:
          - sh: echo {{ secret(name="KES_PASSWORD") | sh_quote }} | reinstall
      - name: from a file
        run: login --token {{ secret(name="API_TOKEN") }}
"#,
    );
    scratch.write("secrets/API_TOKEN", "tok-FILE-0042\n");
    scratch.write(
        "inventory.yml",
        "secrets_dir: ./secrets\nclients:\n  acme:\n    hosts:\n      - { name: a1, address: 127.0.0.1, os: windows }\n",
    );
    let secret = "Pa'ss w$rd\u{2019}X";
    let env = [("KES_PASSWORD", secret)];
    for format in ["human", "json"] {
        let run = scratch.orchestrate_env(
            &[
                "run",
                "playbook.yml",
                "-i",
                "inventory.yml",
                "--dry-run",
                "--format",
                format,
            ],
            &env,
        );
        run.expect_code(0);
        let all = format!("{}{}", run.stdout, run.stderr);
        for leak in ["Pa'ss", "w$rd", "tok-FILE-0042", "ss w"] {
            assert!(!all.contains(leak), "{format}: {leak:?} leaked:\n{all}");
        }
        assert!(
            run.stdout.contains("KLPASSWD='***'"),
            "{format}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("echo '***' | reinstall"),
            "{format}: rollback redacted too"
        );
        assert!(
            run.stdout.contains("login --token ***"),
            "{format}: secrets_dir secret"
        );
    }
}

#[test]
fn identical_hosts_are_shown_once_as_a_group() {
    let scratch = Scratch::new();
    let mut inventory = String::from("clients:\n  big:\n    hosts:\n");
    for i in 0..400 {
        inventory.push_str(&format!(
            "      - {{ name: ws{i:03}, address: 10.9.{}.{}, os: linux }}\n",
            i / 200,
            i % 200
        ));
    }
    inventory.push_str(
        "      - { name: special, address: 10.9.9.9, os: linux, vars: { extra: yes } }\n",
    );
    scratch.write("inventory.yml", &inventory);
    scratch.write(
        "playbook.yml",
        r#"name: grouping
waves: [1, "10%", "50%", "100%"]
vars: { extra: "no" }
phases:
  - name: work
    steps:
      - run: echo extra={{ extra }}
"#,
    );
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"]);
    run.expect_code(0);
    assert!(run.stdout.contains("(400 hosts):"), "{}", run.stdout);
    assert!(run.stdout.contains("steps on special:"), "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("run: echo extra=no").count(),
        1,
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.matches("run: echo extra=").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("wave 1 (1 host): ws000"));
    assert!(run.stdout.contains("wave 2 (40 hosts)"));
    assert!(run.stdout.contains("wave 3 (200 hosts)"));
    assert!(run.stdout.contains("wave 4 (160 hosts)"));
    assert!(
        run.stdout.lines().count() < 40,
        "a 401-host client stays readable"
    );
}

#[test]
fn templates_that_read_captured_values_are_rendered_at_run_time() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        r#"name: captures
phases:
  - name: precheck
    steps:
      - name: find products
        sh: dpkg -l | awk '/kesl/ {print $2}'
        capture: { as: packages, parse: lines }
        check_safe: true
  - name: uninstall
    steps:
      - name: remove them
        when: "packages | length > 0"
        sh: dpkg -r {{ packages | sh_quote }}
      - name: static
        os: [windows]
        sh: never here
      - name: unneeded
        when: "extra_cleanup"
        sh: rm -rf /var/opt/kaspersky
vars: { extra_cleanup: false }
"#,
    );
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: a1, address: 10.0.0.1, os: linux }\n",
    );
    let plan = scratch.plan_json("playbook.yml", "inventory.yml");
    let steps = plan["clients"][0]["hosts"][0]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["command"], "dpkg -l | awk '/kesl/ {print $2}'");
    assert!(
        steps[1]["command"].is_null(),
        "reads `packages`: rendered at run time"
    );
    assert_eq!(steps[2]["skip"], "only for windows");
    assert_eq!(steps[3]["skip"], "when `extra_cleanup` is false");
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"]);
    let text = &run.expect_code(0).stdout;
    assert!(text.contains("dpkg -r {{ packages | sh_quote }}"), "{text}");
    assert!(text.contains("rendered at run time"), "{text}");
    assert!(
        text.contains("when: packages | length > 0 (decided at run time)"),
        "{text}"
    );
}

#[test]
fn selection_by_client_and_limit() {
    let all = dry_run(
        "playbooks/windows-kes-to-defender.yml",
        &["--format", "json"],
        &[],
    )
    .expect_code(0)
    .json();
    let first = all["clients"][0]["name"].as_str().unwrap().to_string();
    let one = dry_run(
        "playbooks/windows-kes-to-defender.yml",
        &["--format", "json", "--client", &first],
        &[],
    )
    .expect_code(0)
    .json();
    assert_eq!(one["clients"].as_array().unwrap().len(), 1);
    assert_eq!(one["clients"][0]["name"], first.as_str());

    let canary = all["clients"][0]["waves"][0]["hosts"][0]
        .as_str()
        .unwrap()
        .to_string();
    let limited = dry_run(
        "playbooks/windows-kes-to-defender.yml",
        &["--format", "json", "--limit", &canary],
        &[],
    )
    .expect_code(0)
    .json();
    let hosts: BTreeSet<&str> = limited["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hosts"].as_array().unwrap())
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, BTreeSet::from([canary.as_str()]));
}
