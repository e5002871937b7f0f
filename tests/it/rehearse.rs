//! `orchestrate rehearse`: the real planner, runner, journal and reports
//! over real SSH to the fleet simulator, never to an inventory address.
//! Each test runs the binary as an operator would and reads what they
//! would read: the exit code, the JSON and HTML reports, the journal.

use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;

use crate::harness::{Scratch, repo};

/// A playbook that removes, reboots and installs, with a rollback.
const PLAYBOOK: &str = r#"name: rehearsed
waves: [1, 2, "100%"]
failure_budget: 1
concurrency: 10
phases:
  - name: precheck
    steps:
      - { name: look, sh: "echo looking for kesl", check_safe: true }
  - name: uninstall
    steps:
      - name: remove kesl
        sh: "echo removing kesl"
        rollback:
          - { name: reinstall kesl, sh: "echo reinstalling kesl" }
  - name: install
    steps:
      - { name: install clamav, sh: "echo installing clamav" }
"#;

/// An inventory of client `acme` with `count` Linux hosts `hNN` at
/// `address_of(n)` (never contacted in a rehearsal).
fn inventory(count: usize, extra: &str, address_of: impl Fn(usize) -> String) -> String {
    let mut text = format!(
        "defaults:\n  transport: ssh\n  user: msp\n  connect_timeout: 30s\n{extra}clients:\n  acme:\n    hosts:\n"
    );
    for n in 1..=count {
        text.push_str(&format!(
            "      - {{ name: h{n:02}, address: '{}', os: linux }}\n",
            address_of(n)
        ));
    }
    text
}

fn documentation_address(n: usize) -> String {
    format!("192.0.2.{n}")
}

fn read_json(scratch: &Scratch, name: &str) -> Value {
    let text = scratch.read(name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"))
}

fn hosts(report: &Value) -> Vec<&Value> {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hosts"].as_array().unwrap())
        .collect()
}

fn host<'a>(report: &'a Value, name: &str) -> &'a Value {
    hosts(report)
        .into_iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

fn count(report: &Value, status: &str) -> usize {
    hosts(report)
        .into_iter()
        .filter(|h| h["status"] == status)
        .count()
}

/// `orchestrate rehearse` in `scratch` with `args` after the playbook and
/// inventory, writing report.json and keeping the journal in r.db.
fn rehearse(
    scratch: &Scratch,
    playbook: &str,
    inventory: &str,
    args: &[&str],
) -> crate::harness::Run {
    let mut all = vec![
        "rehearse",
        playbook,
        "-i",
        inventory,
        "--yes",
        "--state",
        "r.db",
        "--report-json",
        "report.json",
    ];
    all.extend_from_slice(args);
    scratch.orchestrate(&all)
}

#[test]
fn a_fail_rate_halts_a_client_exactly_where_its_budget_says() {
    let scratch = Scratch::new();
    scratch.write("p.yml", PLAYBOOK);
    scratch.write("i.yml", &inventory(10, "", documentation_address));
    // Every host fails: wave 1 (one host) stays within the budget of 1,
    // wave 2 (two hosts) makes three, more than 1: the client halts there
    // and wave 3 never starts.
    let run = rehearse(&scratch, "p.yml", "i.yml", &["--fail-rate", "1"]);
    run.expect_code(1);
    let report = read_json(&scratch, "report.json");
    assert_eq!(report["rehearsal"], true);
    assert_eq!(report["clients"][0]["status"], "halted", "{report}");
    assert_eq!(count(&report, "failed"), 3, "{report}");
    assert_eq!(count(&report, "not_started"), 7, "{report}");
    for name in ["h01", "h02", "h03"] {
        let h = host(&report, name);
        assert_eq!(h["status"], "failed", "{h}");
        assert!(
            h["error"].as_str().unwrap().contains("simulated failure"),
            "{h}"
        );
    }
    // The share of failures is where the fail rate says, each in a phase
    // that changes something: with a budget of 9 of 10, nothing halts.
    let loose = PLAYBOOK.replace("failure_budget: 1", "failure_budget: 9");
    scratch.write("p.yml", &loose);
    let run = rehearse(
        &scratch,
        "p.yml",
        "i.yml",
        &["--fail-rate", "0.5", "--seed", "3"],
    );
    run.expect_code(1);
    let report = read_json(&scratch, "report.json");
    let failed = count(&report, "failed");
    assert!((1..=9).contains(&failed), "{failed} of 10 failed: {report}");
    assert_eq!(count(&report, "succeeded"), 10 - failed, "{report}");
    for h in hosts(&report)
        .into_iter()
        .filter(|h| h["status"] == "failed")
    {
        let failed_step = h["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["status"] == "failed")
            .unwrap();
        assert_ne!(
            failed_step["phase"], "precheck",
            "only check_safe steps there: {h}"
        );
    }
}

/// The report without what differs between two runs of one rehearsal:
/// ids, times and durations.
fn without_times(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for key in [
                "run_id",
                "started_at",
                "finished_at",
                "duration_ms",
                "protection_gap_ms",
            ] {
                map.remove(key);
            }
            for v in map.values_mut() {
                *v = without_times(v.take());
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = without_times(v.take());
            }
        }
        _ => {}
    }
    value
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let scratch = Scratch::new();
    let loose = PLAYBOOK.replace("failure_budget: 1", "failure_budget: 20");
    scratch.write("p.yml", &loose);
    scratch.write("i.yml", &inventory(8, "", documentation_address));
    let once = |seed: &str| {
        rehearse(
            &scratch,
            "p.yml",
            "i.yml",
            &["--fail-rate", "0.4", "--seed", seed],
        );
        without_times(read_json(&scratch, "report.json"))
    };
    let first = once("11");
    assert_eq!(first, once("11"));
    let other = once("12");
    let failed = |r: &Value| -> Vec<String> {
        hosts(r)
            .into_iter()
            .filter(|h| h["status"] == "failed")
            .map(|h| h["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_ne!(
        failed(&first),
        failed(&other),
        "another seed, other failures"
    );
}

#[test]
fn a_fault_of_each_kind_ends_in_the_state_the_fault_suite_expects() {
    let scratch = Scratch::new();
    let playbook = r#"name: faults
waves: ["100%"]
failure_budget: "100%"
phases:
  - name: uninstall
    steps:
      - name: remove kesl
        sh: "echo removing kesl"
        rollback:
          - { name: reinstall kesl, sh: "echo reinstalling kesl" }
      - { name: restart, reboot: { timeout: 8s } }
  - name: install
    steps:
      - { name: install clamav, sh: "echo installing clamav" }
"#;
    scratch.write("p.yml", playbook);
    let names = [
        "ok",
        "refuse",
        "refuse-twice",
        "stall",
        "drop",
        "flood",
        "lost",
        "slow",
    ];
    // Hosts that are never reached give up after 2 s; the others have time
    // for handshakes on a loaded machine.
    let mut text = String::from(
        "defaults:\n  transport: ssh\n  connect_timeout: 30s\nclients:\n  acme:\n    hosts:\n",
    );
    for (n, name) in names.iter().enumerate() {
        let quick = if ["refuse", "stall", "lost"].contains(name) {
            ", connect_timeout: 2s"
        } else {
            ""
        };
        text.push_str(&format!(
            "      - {{ name: {name}, address: 192.0.2.{}, os: linux{quick} }}\n",
            n + 1
        ));
    }
    scratch.write("i.yml", &text);
    scratch.write(
        "s.yml",
        r#"reboot_takes: 300ms
hosts:
  - commands:
      - { match: '' }
faults:
  - { kind: refuse, hosts: refuse }
  - { kind: refuse, hosts: refuse-twice, times: 2 }
  - { kind: stall_handshake, hosts: stall }
  - { kind: drop_mid_command, hosts: drop, match: 'installing clamav' }
  - { kind: flood_output, hosts: flood, match: 'installing clamav', bytes: 20000000 }
  - { kind: reboot, hosts: lost, back_after: never }
  - { kind: reboot, hosts: slow, back_after: 3s }
"#,
    );
    let run = rehearse(&scratch, "p.yml", "i.yml", &["--scenario", "s.yml"]);
    run.expect_code(1);
    let report = read_json(&scratch, "report.json");
    let status = |name: &str| host(&report, name)["status"].as_str().unwrap().to_string();
    // As in tests/it/faults.rs: turned away for good is unreachable and says
    // how often it was tried; for a while, it is tried again and succeeds.
    assert_eq!(status("refuse"), "unreachable");
    let error = host(&report, "refuse")["error"].as_str().unwrap();
    assert!(error.contains(" times (last: "), "{error}");
    assert_eq!(status("refuse-twice"), "succeeded", "{report}");
    assert_eq!(status("stall"), "unreachable");
    // Cut mid-command: the step's outcome is unknown, the host is rolled back.
    assert_eq!(status("drop"), "failed", "{report}");
    let rollback = host(&report, "drop")["rollback"].as_array().unwrap();
    assert!(
        rollback
            .iter()
            .any(|r| r["name"] == "reinstall kesl" && r["status"] == "ok"),
        "{rollback:?}"
    );
    // Twenty megabytes of output: the step succeeds, only a head and a tail kept.
    assert_eq!(status("flood"), "succeeded", "{report}");
    // A reboot that never returns: unreachable, no rollback (nothing to reach).
    assert_eq!(status("lost"), "unreachable", "{report}");
    assert_eq!(status("slow"), "succeeded", "{report}");
    assert_eq!(status("ok"), "succeeded");
}

#[test]
fn no_connection_is_ever_made_to_an_inventory_address() {
    // Each host's inventory address is a listener here, on 127.0.0.0/8,
    // and so is its jump host and a WinRM host's port: a rehearsal that
    // touched any of them would show as an accepted connection.
    let listeners: Vec<TcpListener> = (1..=4)
        .map(|n| TcpListener::bind(format!("127.0.77.{n}:0")).unwrap())
        .collect();
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }
    let at = |n: usize| listeners[n].local_addr().unwrap();
    let scratch = Scratch::new();
    scratch.write("p.yml", PLAYBOOK);
    let text = format!(
        "defaults:\n  transport: ssh\n  user: msp\nclients:\n  acme:\n    jump_host: msp@{}:{}\n    hosts:\n      - {{ name: h01, address: {}, port: {}, os: linux }}\n      - {{ name: h02, address: {}, port: {}, os: linux }}\n      - {{ name: w01, address: {}, os: windows, transport: winrm, winrm: {{ port: {}, tls: false }} }}\n",
        at(0).ip(),
        at(0).port(),
        at(1).ip(),
        at(1).port(),
        at(2).ip(),
        at(2).port(),
        at(3).ip(),
        at(3).port()
    );
    scratch.write("i.yml", &text);
    let run = rehearse(&scratch, "p.yml", "i.yml", &[]);
    run.expect_code(0);
    assert!(run.stdout.contains("rehearsal"), "{}", run.stdout);
    let report = read_json(&scratch, "report.json");
    assert_eq!(count(&report, "succeeded"), 3, "{report}");
    for (n, l) in listeners.iter().enumerate() {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("inventory address {} was contacted: {other:?}", at(n)),
        }
    }
    // Nor can the rehearsal be resumed as a run against those addresses.
    let run_id = report["run_id"].as_str().unwrap();
    let resumed = scratch.orchestrate(&["resume", run_id, "--state", "r.db", "--yes"]);
    resumed.expect_code(2);
    assert!(resumed.stderr.contains("rehearsal"), "{}", resumed.stderr);
}

/// The shipped playbooks and the clients of the example inventory they
/// are rehearsed on (the Windows ones on one client, to stay fast).
const SHIPPED: &[(&str, &[&str])] = &[
    ("windows-kes-to-defender", &["--client", "acme-dental"]),
    ("windows-kes-to-mde", &["--client", "acme-dental"]),
    ("windows-kes-to-crowdstrike", &["--client", "acme-dental"]),
    ("linux-kesl-to-clamav", &[]),
    ("linux-kesl-to-mdatp", &[]),
    ("macos-kes-to-mdatp", &[]),
];

#[test]
fn each_shipped_playbook_rehearses_on_the_example_inventory_and_its_reports_say_so() {
    let inventory = repo().join("inventory/example.yml");
    std::thread::scope(|scope| {
        for (name, args) in SHIPPED {
            let inventory = &inventory;
            scope.spawn(move || rehearse_shipped(name, args, inventory));
        }
    });
}

fn rehearse_shipped(name: &str, args: &[&str], inventory: &Path) {
    let scratch = Scratch::new();
    let playbook = repo().join("playbooks").join(format!("{name}.yml"));
    let mut all = vec!["--time-scale", "0.001", "--forks", "20"];
    all.extend_from_slice(args);
    let run = rehearse(
        &scratch,
        playbook.to_str().unwrap(),
        inventory.to_str().unwrap(),
        &all,
    );
    run.expect_code(0);
    assert!(
        run.stderr.contains("no real host is contacted"),
        "{name}: {}",
        run.stderr
    );
    let report = read_json(&scratch, "report.json");
    assert_eq!(report["rehearsal"], true, "{name}");
    assert!(count(&report, "succeeded") > 0, "{name}: {report}");
    assert_eq!(
        count(&report, "succeeded") + count(&report, "skipped"),
        hosts(&report).len(),
        "{name}: {report}"
    );
    let run_id = report["run_id"].as_str().unwrap();
    scratch
        .orchestrate(&[
            "report", run_id, "--format", "html", "--state", "r.db", "-o", "r.html",
        ])
        .expect_code(0);
    let page = scraper::Html::parse_document(&scratch.read("r.html"));
    let h1 = scraper::Selector::parse("h1").unwrap();
    let heading: String = page.select(&h1).next().unwrap().text().collect();
    assert!(heading.starts_with("Rehearsal "), "{name}: {heading}");
    let journaled = scratch
        .orchestrate(&["report", run_id, "--format", "json", "--state", "r.db"])
        .expect_code(0)
        .json();
    assert_eq!(
        journaled["rehearsal"], true,
        "{name}: the journal says so too"
    );
}

/// An inventory of client `acme`: Linux hosts `l01`, `l02` and Windows
/// hosts `w01`, `w02` (never contacted in a rehearsal).
const LINUX_AND_WINDOWS: &str = "defaults:\n  transport: ssh\n  connect_timeout: 30s\nclients:\n  acme:\n    hosts:\n      - { name: l01, address: 192.0.2.1, os: linux }\n      - { name: l02, address: 192.0.2.2, os: linux }\n      - { name: w01, address: 192.0.2.3, os: windows }\n      - { name: w02, address: 192.0.2.4, os: windows }\n";

/// A playbook that uploads an installer and runs a script with arguments,
/// each OS its own.
const FILES_PLAYBOOK: &str = r#"name: files
waves: ["100%"]
failure_budget: 0
phases:
  - name: install
    steps:
      - name: send the agent to linux
        os: [linux]
        upload: { src: agent.bin, dest: /opt/msp/agent.bin, mode: "0644" }
      - name: send its settings as root
        os: [linux]
        become: true
        upload: { src: agent.bin, dest: /etc/msp/agent.conf, mode: "0600" }
      - name: send the agent to windows
        os: [windows]
        upload: { src: agent.bin, dest: 'C:\ProgramData\msp\agent.bin' }
      - name: install the agent on linux
        os: [linux]
        script: { src: install-agent.sh, args: [--quiet] }
      - name: install the agent on windows
        os: [windows]
        script: { src: install-agent.ps1, args: [-Quiet] }
"#;

/// A scratch folder with [`FILES_PLAYBOOK`], its files (`agent` the
/// installer) and the Linux and Windows inventory.
fn files_scratch(agent: &[u8]) -> Scratch {
    let scratch = Scratch::new();
    std::fs::write(scratch.path().join("agent.bin"), agent).unwrap();
    scratch.write("install-agent.sh", "#!/bin/sh\necho installing \"$1\"\n");
    scratch.write("install-agent.ps1", "param([switch]$Quiet)\n'installing'\n");
    scratch.write("i.yml", LINUX_AND_WINDOWS);
    scratch
}

/// Rehearses [`FILES_PLAYBOOK`] with `failure_budget` and `scenario`;
/// expects exit `code` and gives the JSON report.
fn rehearse_files(scratch: &Scratch, failure_budget: u32, scenario: &str, code: i32) -> Value {
    let playbook = FILES_PLAYBOOK.replace(
        "failure_budget: 0",
        &format!("failure_budget: {failure_budget}"),
    );
    scratch.write("p.yml", &playbook);
    scratch.write("s.yml", scenario);
    rehearse(scratch, "p.yml", "i.yml", &["--scenario", "s.yml"]).expect_code(code);
    read_json(scratch, "report.json")
}

/// The steps of host `name` whose status is `status`.
fn steps_with<'a>(report: &'a Value, name: &str, status: &str) -> Vec<&'a Value> {
    host(report, name)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == status)
        .collect()
}

#[test]
fn upload_and_script_steps_rehearse_on_linux_and_windows_hosts() {
    let scratch = files_scratch(&vec![7u8; 3 * 256 * 1024 + 11]);
    // Only the scripts' runs are in the scenario, by the script's name: the
    // uploads and the transport's checks of them are answered by the
    // simulated hosts themselves.
    let report = rehearse_files(
        &scratch,
        0,
        "hosts:\n  - commands:\n      - { match: 'install-agent\\.(sh|ps1)', stdout: installed }\n",
        0,
    );
    assert_eq!(count(&report, "succeeded"), 4, "{report}");
    for name in ["l01", "l02", "w01", "w02"] {
        let ran: Vec<&str> = steps_with(&report, name, "ok")
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if name.starts_with('l') {
            &[
                "send the agent to linux",
                "send its settings as root",
                "install the agent on linux",
            ]
        } else {
            &["send the agent to windows", "install the agent on windows"]
        };
        assert_eq!(ran, expected, "{}", host(&report, name));
    }
    // A script the scenario does not answer fails loudly, naming its copy.
    let report = rehearse_files(
        &scratch,
        4,
        "hosts:\n  - commands:\n      - { match: 'install-agent\\.ps1' }\n",
        1,
    );
    let error = host(&report, "l01")["error"].as_str().unwrap().to_string();
    assert!(error.contains("exited with 127"), "{error}");
    let failed = steps_with(&report, "l01", "failed");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], "install the agent on linux", "{report}");
    let detail = failed[0]["stderr"].as_str().unwrap();
    assert!(
        detail.contains("no answer in the scenario for: '/tmp/orchestrate-"),
        "{detail}"
    );
    assert_eq!(host(&report, "w01")["status"], "succeeded", "{report}");
}

#[test]
fn a_fail_rate_strikes_a_phase_whose_work_is_a_script_step() {
    // The install phase is uploads and a script: the fail rate fails the
    // script's run (found by its file name), as it fails a command.
    let scratch = files_scratch(&vec![7u8; 1000]);
    let report = rehearse_files(
        &scratch,
        4,
        "fail_rates: { install: 1 }\nhosts:\n  - commands:\n      - { match: 'install-agent', stdout: installed }\n",
        1,
    );
    assert_eq!(count(&report, "failed"), 4, "{report}");
    for name in ["l01", "l02", "w01", "w02"] {
        let failed = steps_with(&report, name, "failed");
        assert_eq!(failed.len(), 1, "{report}");
        assert!(
            failed[0]["name"]
                .as_str()
                .unwrap()
                .starts_with("install the agent on"),
            "{report}"
        );
        assert!(
            failed[0]["stderr"]
                .as_str()
                .unwrap()
                .contains("simulated failure"),
            "{report}"
        );
    }
}

#[test]
fn a_full_disk_fails_the_upload_with_what_a_real_full_disk_says() {
    let scratch = files_scratch(&vec![7u8; 300_000]);
    let report = rehearse_files(
        &scratch,
        4,
        "hosts:\n  - commands:\n      - { match: 'install-agent' }\nfaults:\n  - { kind: disk_full, hosts: 'l02' }\n",
        1,
    );
    let full = host(&report, "l02");
    assert_eq!(full["status"], "failed", "{full}");
    assert_eq!(full["steps"][0]["status"], "failed", "{full}");
    // As from OpenSSH's sftp-server: a bare Failure, which the transport
    // explains, and the half-written copy removed at once.
    let error = full["error"].as_str().unwrap();
    assert!(error.contains("free space"), "{error}");
    assert!(error.contains("partial copy was removed"), "{error}");
    for name in ["l01", "w01", "w02"] {
        assert_eq!(host(&report, name)["status"], "succeeded", "{report}");
    }
}

/// A simulator in this process playing `hosts`, and the SSH transport's
/// targets for them (keys pinned, the rehearsal's client key in `dir`).
async fn simulated(
    dir: &Path,
    hosts: &[(&str, orchestrate::transport::Os)],
) -> (
    orchestrate::rehearse::simulator::Simulator,
    Vec<orchestrate::transport::Target>,
) {
    use orchestrate::rehearse::endpoint::{Fleet, Signatures, Spec};
    use orchestrate::rehearse::simulator;
    use orchestrate::transport::{HostKeyPolicy, SshSettings, Target, TransportKind};
    let specs: Vec<Spec> = hosts
        .iter()
        .enumerate()
        .map(|(n, (name, os))| Spec {
            name: name.to_string(),
            client: "acme".into(),
            os: *os,
            address: std::net::Ipv4Addr::new(127, 61, 0, n as u8 + 1),
        })
        .collect();
    let targets_of: Vec<(String, std::net::Ipv4Addr, orchestrate::transport::Os)> = specs
        .iter()
        .map(|s| (s.name.clone(), s.address, s.os))
        .collect();
    let fleet = Fleet::new(1, 1.0, None, vec![], vec![], Signatures::new(vec![]), specs);
    let simulator = simulator::start(fleet).await.unwrap();
    let key = dir.join("client_ed25519");
    orchestrate::rehearse::write_client_key(&key, 1).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let targets = targets_of
        .into_iter()
        .map(|(name, address, os)| Target {
            address: address.to_string(),
            port: Some(simulator.port),
            os,
            user: Some("rehearsal".into()),
            kind: TransportKind::Ssh,
            ssh: SshSettings {
                identity_file: Some(key.clone()),
                known_hosts: Some(known_hosts.clone()),
                host_key: Some(simulator::host_key_line(1, &name)),
                ..SshSettings::default()
            },
            winrm: Default::default(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: std::time::Duration::from_secs(30),
            reboot_command: None,
            r#become: Default::default(),
            name,
        })
        .collect();
    (simulator, targets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_refuses_a_copy_that_does_not_check_out_as_a_real_host_would() {
    use orchestrate::transport::atomic_upload::{
        Expected, powershell_check_and_replace, sh_check_and_replace,
    };
    use orchestrate::transport::ssh::SshConnector;
    use orchestrate::transport::{Command, Connector, ExitStatus, Os, Script};
    let dir = tempfile::tempdir().unwrap();
    let (simulator, targets) =
        simulated(dir.path(), &[("l01", Os::Linux), ("w01", Os::Windows)]).await;
    let agent = crate::support::upload_source(b"the agent's installer, 35 bytes long");
    let connector = SshConnector::with_agent(None);
    for target in &targets {
        let session = connector.connect(target).await.unwrap();
        let dest = match target.os {
            Os::Windows => "C:\\ProgramData\\msp\\agent.bin",
            _ => "/opt/msp/agent.bin",
        };
        let check = |temp: &str, expected: &Expected| {
            Command::new(match target.os {
                Os::Windows => {
                    Script::PowerShell(powershell_check_and_replace(temp, dest, expected))
                }
                _ => Script::Sh(sh_check_and_replace(temp, dest, expected)),
            })
        };
        // A copy written over SFTP whose hash is not the one expected: the
        // check fails as the script does on a real host, and removes it.
        let temp = session.temp_path("agent.bin");
        session.upload(&agent, &temp, 0o600).await.unwrap();
        let wrong = Expected {
            size: agent.len(),
            sha256: "0".repeat(64),
        };
        let refused = session.execute(&check(&temp, &wrong), None).await.unwrap();
        assert_eq!(refused.status, ExitStatus::Code(1), "{}", target.name);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains(&format!(
                "the copy on the host has {} bytes and SHA-256 {}; expected {} bytes and {}",
                agent.len(),
                agent.sha256_hex(),
                agent.len(),
                wrong.sha256
            )),
            "{}: {said}",
            target.name
        );
        // Removed: checked again, even with the right hash, it is not there.
        let right = Expected {
            size: agent.len(),
            sha256: agent.sha256_hex(),
        };
        let gone = session.execute(&check(&temp, &right), None).await.unwrap();
        assert_eq!(gone.status, ExitStatus::Code(1), "{}", target.name);
        // The transport's own upload (beside the destination, checked,
        // renamed over it) succeeds, and again over the first copy.
        session.upload(&agent, dest, 0o644).await.unwrap();
        session.upload(&agent, dest, 0o644).await.unwrap();
        // A copied script that never arrived cannot be run.
        let never = session.temp_path("never-sent.sh");
        let run = match target.os {
            Os::Windows => Script::PowerShell(format!("& '{never}'")),
            _ => Script::Sh(format!("'{never}'")),
        };
        let missing = session.execute(&Command::new(run), None).await.unwrap();
        assert_ne!(missing.status, ExitStatus::Code(0), "{}", target.name);
        session.remove(dest).await.unwrap();
        session.close().await;
    }
    simulator.stop.cancel();
}

#[test]
fn a_large_upload_to_a_rehearsal_host_does_not_grow_the_process_by_its_size() {
    // Peak memory of one rehearsal uploading 1 MiB and of one uploading
    // 64 MiB: the simulated host hashes what it is sent and keeps none of
    // it, so the two differ by far less than the file.
    let peak_mib = |mib: usize| {
        let scratch = Scratch::new();
        scratch.write(
            "p.yml",
            "name: big\nphases:\n  - name: install\n    steps:\n      - name: send the installer\n        upload: { src: big.bin, dest: /opt/msp/big.bin }\n",
        );
        scratch.write("i.yml", &inventory(1, "", documentation_address));
        {
            use std::io::Write;
            let file = std::fs::File::create(scratch.path().join("big.bin")).unwrap();
            let mut file = std::io::BufWriter::new(file);
            let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
            for _ in 0..mib {
                file.write_all(&block).unwrap();
            }
        }
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrate"))
            .args([
                "rehearse",
                "p.yml",
                "-i",
                "i.yml",
                "--yes",
                "--state",
                "r.db",
                "--report-json",
                "report.json",
            ])
            .current_dir(scratch.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (status, usage) = crate::support::wait_measured(child);
        let report = read_json(&scratch, "report.json");
        assert_eq!(status.code(), Some(0), "{report}");
        assert_eq!(host(&report, "h01")["steps"][0]["status"], "ok", "{report}");
        usage.ru_maxrss as u64 / 1024
    };
    let small = peak_mib(1);
    let large = peak_mib(64);
    assert!(
        large < small + 24,
        "peak RSS {small} MiB for 1 MiB, {large} MiB for 64 MiB"
    );
}
