//! SIGTERM and SIGHUP stop a run as the first Ctrl-C does: no new host or
//! step, running steps finish, half-done hosts are rolled back, the
//! journal and `--report-json` are closed properly, exit 130. A second
//! signal of any kind stops at once. A `wait:` step and a pause between
//! waves end at the first signal.
//!
//! `kill`, `timeout`, systemd, `docker stop` and a CI cancel send SIGTERM;
//! a dropped SSH session to the controller sends SIGHUP. Hosts here are
//! `local` hosts and hosts behind real OpenSSH servers on loopback.

use crate::harness;
use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use harness::{Scratch, send, wait_for};
use serde_json::Value;
use support::sshd::{ClientKey, SshdEnv};

/// A host's name and its own folder (where its steps leave their marks).
struct Host {
    name: String,
    dir: PathBuf,
}

impl Host {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// `count` local hosts of client `acme`, each with its own folder.
fn local_fleet(scratch: &Scratch, count: usize) -> Vec<Host> {
    scratch
        .local_fleet(count)
        .into_iter()
        .enumerate()
        .map(|(i, dir)| Host {
            name: format!("h{:02}", i + 1),
            dir,
        })
        .collect()
}

/// `count` hosts behind real sshd processes, each with a folder the
/// servers' user owns.
fn ssh_fleet(
    scratch: &Scratch,
    env: &SshdEnv,
    count: usize,
) -> (Vec<support::sshd::Sshd>, Vec<Host>) {
    let (servers, addresses) = env.fleet(count);
    env.trust(&addresses);
    let mut text = format!(
        "defaults:\n  transport: ssh\n  user: {}\n  connect_timeout: 5s\n  ssh: {{ identity_file: '{}', known_hosts: '{}' }}\nclients:\n  acme:\n    hosts:\n",
        env.user(),
        env.key(ClientKey::Ed25519).display(),
        env.known_hosts.display()
    );
    let hosts = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let name = format!("h{:02}", i + 1);
            let dir = env.folder(&name);
            text.push_str(&format!(
                "      - {{ name: {name}, address: {}, port: {}, os: linux, vars: {{ dir: '{}' }} }}\n",
                address.address,
                address.port,
                dir.display()
            ));
            Host { name, dir }
        })
        .collect();
    scratch.write("inventory.yml", &text);
    (servers, hosts)
}

/// Two hosts at a time; each removes the old product (a slow step), then
/// installs the new one. Rollback of the removal puts it back.
const MIGRATION: &str = r#"name: migration
waves: ["100%"]
concurrency: 2
phases:
  - name: uninstall
    steps:
      - name: remove old
        sh: echo removed >> {{ dir }}/log; touch {{ dir }}/started; sleep 1
        marks: protection_off
        rollback:
          - sh: echo restored >> {{ dir }}/log
  - name: install
    steps:
      - name: install new
        sh: echo installed >> {{ dir }}/log
        marks: protection_on
"#;

const RUN: &[&str] = &[
    "run",
    "playbook.yml",
    "-i",
    "inventory.yml",
    "--report-json",
    "report.json",
];

fn report(scratch: &Scratch) -> Value {
    serde_json::from_str(&scratch.read("report.json"))
        .unwrap_or_else(|e| panic!("report.json is written ({e})"))
}

fn status_of<'a>(report: &'a Value, host: &str) -> &'a Value {
    report["clients"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == host)
        .unwrap_or_else(|| panic!("{host} in the report"))
}

/// Starts the migration on four hosts, sends `signal` while the first two
/// are in their slow step, and checks what an operator would: exit 130,
/// the two hosts finished their step and were rolled back, the other two
/// untouched, the report written and the journal saying `interrupted`.
fn interrupt_mid_wave(scratch: &Scratch, hosts: &[Host], signal: i32) {
    scratch.write("playbook.yml", MIGRATION);
    let mut child = scratch.spawn(RUN);
    wait_for("the first two hosts to be in `remove old`", || {
        hosts[..2].iter().all(|h| h.dir.join("started").exists())
    });
    send(&child, signal);
    let (code, _) = harness::exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(130));

    let report = report(scratch);
    assert_eq!(report["status"], "interrupted");
    for host in &hosts[..2] {
        assert_eq!(status_of(&report, &host.name)["status"], "failed");
        assert_eq!(
            host.log(),
            "removed\nrestored\n",
            "{}: its step finished, then it was put back as it was",
            host.name
        );
    }
    for host in &hosts[2..] {
        assert_eq!(status_of(&report, &host.name)["status"], "not_started");
        assert_eq!(host.log(), "", "{} was never touched", host.name);
    }

    let journal = scratch.journaled_report();
    assert_eq!(journal["status"], "interrupted", "not left `running`");
    for host in hosts {
        assert_eq!(
            status_of(&journal, &host.name)["status"],
            status_of(&report, &host.name)["status"],
            "the journal and the report agree on {}",
            host.name
        );
    }
}

#[test]
fn sigterm_mid_wave_on_local_hosts_rolls_back_like_ctrl_c() {
    let scratch = Scratch::new();
    let hosts = local_fleet(&scratch, 4);
    interrupt_mid_wave(&scratch, &hosts, libc::SIGTERM);
}

#[test]
fn sighup_mid_wave_on_local_hosts_rolls_back_like_ctrl_c() {
    let scratch = Scratch::new();
    let hosts = local_fleet(&scratch, 4);
    interrupt_mid_wave(&scratch, &hosts, libc::SIGHUP);
}

#[test]
fn sigterm_mid_wave_on_ssh_hosts_rolls_back_like_ctrl_c() {
    let env = SshdEnv::new();
    let scratch = Scratch::new();
    let (_servers, hosts) = ssh_fleet(&scratch, &env, 4);
    interrupt_mid_wave(&scratch, &hosts, libc::SIGTERM);
}

#[test]
fn sighup_mid_wave_on_ssh_hosts_rolls_back_like_ctrl_c() {
    let env = SshdEnv::new();
    let scratch = Scratch::new();
    let (_servers, hosts) = ssh_fleet(&scratch, &env, 4);
    interrupt_mid_wave(&scratch, &hosts, libc::SIGHUP);
}

#[test]
fn a_second_signal_of_any_kind_stops_at_once() {
    for (first, second) in [
        (libc::SIGTERM, libc::SIGHUP),
        (libc::SIGHUP, libc::SIGINT),
        (libc::SIGINT, libc::SIGTERM),
    ] {
        let scratch = Scratch::new();
        let hosts = local_fleet(&scratch, 1);
        scratch.write(
            "playbook.yml",
            "name: slow\nphases:\n  - name: p\n    steps:\n      - name: slow\n        sh: touch {{ dir }}/started; sleep 30\n",
        );
        let mut child = scratch.spawn(RUN);
        wait_for("the slow step", || hosts[0].dir.join("started").exists());
        send(&child, first);
        std::thread::sleep(Duration::from_millis(300));
        send(&child, second);
        let (code, took) = harness::exit_within(&mut child, Duration::from_secs(20));
        assert_eq!(code, Some(130), "signals {first} then {second}");
        assert!(
            took < Duration::from_secs(10),
            "signals {first} then {second}: did not wait for the 30 s step ({took:?})"
        );
        assert_eq!(scratch.journaled_report()["status"], "interrupted");
    }
}

#[test]
fn the_first_sigterm_ends_a_wait_step_and_rolls_the_host_back() {
    let scratch = Scratch::new();
    let hosts = local_fleet(&scratch, 1);
    scratch.write(
        "playbook.yml",
        r#"name: settle
phases:
  - name: uninstall
    steps:
      - name: remove old
        sh: echo removed >> {{ dir }}/log
        marks: protection_off
        rollback:
          - sh: echo restored >> {{ dir }}/log
      - name: let it settle
        wait: 1h
  - name: install
    steps:
      - name: install new
        sh: echo installed >> {{ dir }}/log
"#,
    );
    let mut child = scratch.spawn(RUN);
    wait_for("the wait step", || hosts[0].log() == "removed\n");
    std::thread::sleep(Duration::from_millis(300));
    send(&child, libc::SIGTERM);
    let (code, took) = harness::exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(5),
        "the 1 h wait ended: {took:?}"
    );
    assert_eq!(hosts[0].log(), "removed\nrestored\n");
    let report = report(&scratch);
    let host = status_of(&report, "h01");
    assert_eq!(host["status"], "failed");
    let wait = &host["steps"][1];
    assert_eq!(wait["name"], "let it settle");
    assert_eq!(wait["status"], "failed");
    assert!(
        wait["detail"].as_str().unwrap().contains("cut short"),
        "{wait}"
    );
}

#[test]
fn the_first_sigterm_ends_a_pause_between_waves() {
    let scratch = Scratch::new();
    let hosts = local_fleet(&scratch, 2);
    scratch.write(
        "playbook.yml",
        "name: paused\nwaves: [1, \"100%\"]\npause_between_waves: 1h\nphases:\n  - name: p\n    steps:\n      - sh: echo ran >> {{ dir }}/log\n",
    );
    let mut child = scratch.spawn_logging(RUN, "out.txt");
    wait_for("the pause", || {
        scratch.read("out.txt").contains("waiting 1h before wave 2")
    });
    send(&child, libc::SIGTERM);
    let (code, took) = harness::exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(5),
        "the 1 h pause ended: {took:?}"
    );
    let report = report(&scratch);
    assert_eq!(status_of(&report, "h01")["status"], "succeeded");
    assert_eq!(status_of(&report, "h02")["status"], "not_started");
    assert_eq!(hosts[1].log(), "", "wave 2 never started");
}
