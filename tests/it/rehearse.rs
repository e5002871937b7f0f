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
