//! Faults that must end in a true state: connections cut mid-command and
//! mid-upload, hosts that turn connections away, `MaxSessions 1`, reboots
//! that never return. Each runs the real binary over real `sshd` processes,
//! most through the fault proxy ([`support::proxy`]), with healthy hosts in
//! the same run. For each, what the host is left with on disk is checked,
//! and the host's final state, its rollback, the journal (`status`, the
//! journaled report) and `--report-json` must all say the same.

use crate::harness;
use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{Scratch, exit_within, wait_for};
use serde_json::Value;
use support::proxy::Proxy;
use support::sshd::{ClientKey, Host, Sshd, SshdEnv};

/// One inventory host: its name, where it is, and extra inventory keys
/// (`, reboot_command: '...'`).
pub(crate) struct Entry<'a> {
    name: &'a str,
    host: Host,
    extra: String,
}

pub(crate) fn entry<'a>(name: &'a str, host: &Host) -> Entry<'a> {
    Entry {
        name,
        host: host.clone(),
        extra: String::new(),
    }
}

/// Client `acme` with `entries`, a short connect timeout.
pub(crate) fn inventory(env: &SshdEnv, entries: &[Entry], connect_timeout: &str) -> String {
    let mut text = format!(
        "defaults:\n  transport: ssh\n  user: {}\n  connect_timeout: {connect_timeout}\n  ssh: {{ identity_file: '{}', known_hosts: '{}' }}\nclients:\n  acme:\n    hosts:\n",
        env.user(),
        env.key(ClientKey::Ed25519).display(),
        env.known_hosts.display()
    );
    for e in entries {
        text.push_str(&format!(
            "      - {{ name: {}, address: {}, port: {}, os: linux{} }}\n",
            e.name, e.host.address, e.host.port, e.extra
        ));
    }
    text
}

/// A playbook: `body` (its `phases:`), with `MARKS` standing for `marks`.
pub(crate) fn playbook(body: &str, marks: &Path) -> String {
    format!(
        "name: faults\nwaves: [\"100%\"]\nfailure_budget: \"100%\"\n{}",
        body.replace("MARKS", &marks.display().to_string())
    )
}

pub(crate) const RUN: &[&str] = &[
    "run",
    "playbook.yml",
    "-i",
    "inventory.yml",
    "--state",
    "state.db",
    "--report-json",
    "report.json",
];

pub(crate) fn report(scratch: &Scratch) -> Value {
    let text = std::fs::read_to_string(scratch.path().join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn host<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["clients"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {report}"))
}

pub(crate) fn rollback_of(report: &Value, name: &str) -> Vec<(String, String)> {
    host(report, name)["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The journal says what the report says: the report rebuilt from the
/// state file has the same hosts, states, errors and rollbacks, and
/// `status` counts the same states.
pub(crate) fn journal_agrees(scratch: &Scratch, report: &Value) {
    let run_id = report["run_id"].as_str().unwrap();
    let journaled = scratch
        .orchestrate(&["report", run_id, "--format", "json", "--state", "state.db"])
        .expect_code(0)
        .json();
    let hosts = |r: &Value| -> Vec<Value> {
        r["clients"][0]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let rollback: Vec<Value> = h["rollback"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| serde_json::json!([s["name"], s["status"]]))
                    .collect();
                serde_json::json!([h["name"], h["status"], h["error"], rollback])
            })
            .collect()
    };
    assert_eq!(hosts(&journaled), hosts(report), "journal vs --report-json");
    let status = scratch
        .orchestrate(&["status", run_id, "--state", "state.db", "--format", "json"])
        .expect_code(0)
        .json();
    for h in report["clients"][0]["hosts"].as_array().unwrap() {
        let state = h["status"].as_str().unwrap();
        let counted = report["clients"][0]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["status"] == state)
            .count();
        assert_eq!(
            status["clients"][0]["hosts"][state], counted,
            "status counts {state}: {status}"
        );
    }
}

/// A file of `len` bytes that no prefix of itself passes for.
pub(crate) fn payload(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// The names in `dir`, sorted.
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub(crate) fn marks(env: &SshdEnv) -> PathBuf {
    env.folder("marks")
}

/// Waits until `delay` has passed since `since`.
fn sleep_past(since: Instant, delay: Duration) {
    if let Some(left) = delay.checked_sub(since.elapsed()) {
        std::thread::sleep(left);
    }
}

/// h01 behind a fault proxy, h02.. healthy hosts reached directly, one
/// scratch folder, and the hosts' folder for marks (`MARKS`).
pub(crate) struct Rig {
    pub(crate) env: SshdEnv,
    pub(crate) proxy: Proxy,
    healthy: Vec<Host>,
    pub(crate) marks: PathBuf,
    pub(crate) scratch: Scratch,
    _servers: Vec<Sshd>,
}

pub(crate) fn rig(healthy: usize) -> Rig {
    let env = SshdEnv::new();
    let lonely = env.server(1);
    let proxy = Proxy::start(&lonely.host());
    let (mut servers, hosts) = if healthy > 0 {
        env.fleet(healthy)
    } else {
        (Vec::new(), Vec::new())
    };
    servers.push(lonely);
    env.trust(&[vec![proxy.host()], hosts.clone()].concat());
    let marks = marks(&env);
    Rig {
        env,
        proxy,
        healthy: hosts,
        marks,
        scratch: Scratch::new(),
        _servers: servers,
    }
}

impl Rig {
    /// Writes the inventory (h01 through the proxy, then the healthy
    /// hosts) and the playbook `body`.
    pub(crate) fn write(&self, body: &str, connect_timeout: &str) {
        let names: Vec<String> = (0..=self.healthy.len())
            .map(|i| format!("h{:02}", i + 1))
            .collect();
        let mut entries = vec![entry(&names[0], &self.proxy.host())];
        for (name, host) in names[1..].iter().zip(&self.healthy) {
            entries.push(entry(name, host));
        }
        self.scratch.write(
            "inventory.yml",
            &inventory(&self.env, &entries, connect_timeout),
        );
        self.scratch
            .write("playbook.yml", &playbook(body, &self.marks));
    }
}

const CUT_MID_COMMAND: &str = r#"phases:
  - name: uninstall
    steps:
      - name: remove the product
        sh: touch MARKS/{{ host.name }}.started; sleep 3; touch MARKS/{{ host.name }}.uninstalled
        rollback:
          - name: reinstall the product
            sh: touch MARKS/{{ host.name }}.reinstalled
"#;

#[test]
fn a_command_cut_off_by_a_broken_connection_is_killed_before_the_rollback() {
    let rig = rig(2);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    rig.write(CUT_MID_COMMAND, "5s");
    let mut child = scratch.spawn(RUN);
    wait_for("h01's step to start", || marks.join("h01.started").exists());
    let started = Instant::now();
    proxy.cut(); // the cable is pulled while `remove the product` runs
    assert_eq!(child.wait().unwrap().code(), Some(1));

    // Past the moment the cut command would have finished: it never does.
    sleep_past(started, Duration::from_secs(4));
    assert!(
        !marks.join("h01.uninstalled").exists(),
        "the cut command went on after the rollback"
    );
    assert!(marks.join("h01.reinstalled").exists(), "the rollback ran");
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    assert!(
        h01["error"].as_str().unwrap().contains("connection lost"),
        "{h01}"
    );
    assert_eq!(
        rollback_of(&report, "h01"),
        [("reinstall the product".into(), "ok".into())]
    );
    for name in ["h02", "h03"] {
        assert_eq!(host(&report, name)["status"], "succeeded");
        assert!(marks.join(format!("{name}.uninstalled")).exists());
        assert!(!marks.join(format!("{name}.reinstalled")).exists());
    }
    journal_agrees(scratch, &report);
}

/// The same cut, of a step that runs as root through sudo: the login user
/// cannot kill it, so the new connection kills it through sudo too, and
/// only then rolls back.
#[test]
fn a_become_command_cut_off_by_a_broken_connection_is_killed_through_sudo() {
    let rig = rig(0);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    let password = rig
        .env
        .password()
        .expect("the test user's password (run as root)");
    rig.write(CUT_MID_COMMAND, "5s");
    let inventory = std::fs::read_to_string(scratch.path().join("inventory.yml")).unwrap();
    scratch.write(
        "inventory.yml",
        &inventory.replacen(
            "defaults:\n",
            "defaults:\n  become: { method: sudo, password_secret: BECOME_TEST_PW }\n",
            1,
        ),
    );
    let playbook = std::fs::read_to_string(scratch.path().join("playbook.yml")).unwrap();
    scratch.write(
        "playbook.yml",
        &playbook.replacen("name: faults\n", "name: faults\nbecome: true\n", 1),
    );
    let mut child = scratch
        .command(RUN)
        .env("BECOME_TEST_PW", &password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("h01's step to start", || marks.join("h01.started").exists());
    let started = Instant::now();
    proxy.cut();
    assert_eq!(child.wait().unwrap().code(), Some(1));

    sleep_past(started, Duration::from_secs(4));
    assert!(
        !marks.join("h01.uninstalled").exists(),
        "the cut root command went on after the rollback"
    );
    use std::os::unix::fs::MetadataExt;
    let reinstalled = std::fs::metadata(marks.join("h01.reinstalled")).expect("the rollback ran");
    assert_eq!(reinstalled.uid(), 0, "the rollback ran as root");
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    assert_eq!(
        rollback_of(&report, "h01"),
        [("reinstall the product".into(), "ok".into())]
    );
    journal_agrees(scratch, &report);
}

const ONE_STEP: &str = r#"phases:
  - name: p
    steps:
      - name: mark
        sh: touch MARKS/{{ host.name }}.done
"#;

#[test]
fn a_host_that_refuses_resets_and_drops_connections_for_a_while_is_tried_again() {
    let rig = rig(1);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    // Refused outright for a moment, then two resets before the banner,
    // then two closes without a word (sshd past MaxStartups).
    proxy.refuse_for(Duration::from_millis(400));
    proxy.reset_next(2);
    proxy.close_next(2);
    rig.write(ONE_STEP, "8s");
    scratch.orchestrate(RUN).expect_code(0);
    assert_eq!(proxy.turned_away(), 4);
    let report = report(scratch);
    for name in ["h01", "h02"] {
        assert_eq!(host(&report, name)["status"], "succeeded");
        assert!(marks.join(format!("{name}.done")).exists());
    }
    journal_agrees(scratch, &report);
}

#[test]
fn a_host_that_keeps_turning_connections_away_is_unreachable_and_says_why() {
    let rig = rig(1);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    proxy.close_next(usize::MAX);
    rig.write(ONE_STEP, "2s");
    scratch.orchestrate(RUN).expect_code(1);
    assert!(proxy.turned_away() >= 3, "{} attempts", proxy.turned_away());
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "unreachable");
    let error = h01["error"].as_str().unwrap();
    assert!(error.contains(" times (last: "), "{error}");
    assert!(
        error.contains("the endpoint may be throttling new connections"),
        "{error}"
    );
    assert!(!marks.join("h01.done").exists());
    assert_eq!(host(&report, "h02")["status"], "succeeded");
    journal_agrees(scratch, &report);
}

#[test]
fn sixteen_hosts_at_once_on_a_throttling_sshd_all_succeed() {
    let env = SshdEnv::new();
    let server = env.server_configured(16, "MaxStartups 3");
    let hosts = server.hosts();
    env.trust(&hosts);
    let marks = marks(&env);
    // Three connections that never say a word fill sshd's startup slots:
    // until they go, sshd drops every new connection unanswered.
    let hogs: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect((hosts[0].address.as_str(), hosts[0].port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(hogs);
    });
    let names: Vec<String> = (1..=16).map(|i| format!("h{i:02}")).collect();
    let entries: Vec<Entry> = names.iter().zip(&hosts).map(|(n, h)| entry(n, h)).collect();
    let scratch = &Scratch::new();
    scratch.write("inventory.yml", &inventory(&env, &entries, "10s"));
    scratch.write("playbook.yml", &playbook(ONE_STEP, &marks));
    let mut args = RUN.to_vec();
    args.extend(["--forks", "16"]);
    let run = scratch.orchestrate(&args);
    release.join().unwrap();
    let report = report(scratch);
    for name in &names {
        assert_eq!(host(&report, name)["status"], "succeeded", "{report}");
        assert!(marks.join(format!("{name}.done")).exists());
    }
    run.expect_code(0);
    let log = server.log();
    assert!(
        log.contains("MaxStartups"),
        "sshd turned connections away: {log}"
    );
    journal_agrees(scratch, &report);
}

const UPLOAD_THEN_FAIL: &str = r#"phases:
  - name: install
    steps:
      - name: copy the installer
        upload: { src: installer.bin, dest: MARKS/installer.bin }
        rollback:
          - name: remove the installer
            sh: rm MARKS/installer.bin
      - name: run the setup script
        script: { src: setup.sh }
        rollback:
          - name: undo the setup
            sh: rm MARKS/set-up
      - name: install
        sh: cmp -s MARKS/installer.bin MARKS/installer.bin && touch MARKS/installed
        rollback:
          - name: uninstall
            sh: rm MARKS/installed
      - name: verify
        sh: echo "the new product does not answer" >&2; exit 1
"#;

#[test]
fn under_max_sessions_1_an_upload_leaves_room_for_every_later_step_and_the_rollback() {
    let env = SshdEnv::new();
    let server = env.server_with(1, 1);
    env.trust(&[server.host()]);
    let marks = marks(&env);
    let scratch = &Scratch::new();
    scratch.write(
        "inventory.yml",
        &inventory(&env, &[entry("h01", &server.host())], "5s"),
    );
    scratch.write("playbook.yml", &playbook(UPLOAD_THEN_FAIL, &marks));
    scratch.write("installer.bin", &"x".repeat(100_000));
    scratch.write(
        "setup.sh",
        &format!("#!/bin/sh\ntouch {}/set-up\n", marks.display()),
    );
    scratch.orchestrate(RUN).expect_code(1);
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    let steps: Vec<&str> = h01["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["ok", "ok", "ok", "failed"], "{h01}");
    let ok = |name: &str| (name.to_string(), "ok".to_string());
    assert_eq!(
        rollback_of(&report, "h01"),
        [
            ok("uninstall"),
            ok("undo the setup"),
            ok("remove the installer")
        ]
    );
    for left in ["installer.bin", "set-up", "installed"] {
        assert!(!marks.join(left).exists(), "{left} was not rolled back");
    }
    journal_agrees(scratch, &report);
}

pub(crate) const UPLOAD_ONLY: &str = r#"phases:
  - name: install
    steps:
      - name: copy the installer
        upload: { src: installer.bin, dest: MARKS/installer.bin }
        rollback:
          - name: note the rollback
            sh: touch MARKS/rolled-back
"#;

/// Puts a good old copy at `UPLOAD_ONLY`'s destination.
pub(crate) fn keep_a_good_old_copy(rig: &Rig) {
    std::fs::write(rig.marks.join("installer.bin"), "the good old copy").unwrap();
    rig.env.give_tree(&rig.marks);
}

/// `UPLOAD_ONLY`'s destination holds its good old copy still, and beside
/// it is nothing but the rollback's mark: no partial copy.
pub(crate) fn only_the_good_old_copy_is_left(marks: &Path) {
    assert_eq!(
        std::fs::read_to_string(marks.join("installer.bin")).unwrap(),
        "the good old copy"
    );
    assert_eq!(
        names_in(marks),
        ["installer.bin", "rolled-back"],
        "no partial copy is left"
    );
}

#[test]
fn an_upload_cut_half_way_leaves_the_good_old_copy_and_no_partial_file() {
    let rig = rig(0);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    keep_a_good_old_copy(&rig);
    rig.write(UPLOAD_ONLY, "5s");
    let new_copy = payload(4_000_000);
    scratch.write("installer.bin", &new_copy);
    proxy.cut_after_bytes(1_000_000); // about a quarter of the way through
    scratch.orchestrate(RUN).expect_code(1);
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    only_the_good_old_copy_is_left(marks);
    journal_agrees(scratch, &report);

    // Uncut, the same upload replaces the file whole.
    scratch.orchestrate(RUN).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(marks.join("installer.bin")).unwrap(),
        new_copy
    );
}

pub(crate) const REBOOT_STEP: &str = r#"phases:
  - name: uninstall
    steps:
      - name: remove the product
        sh: touch MARKS/{{ host.name }}.removed
        rollback:
          - name: reinstall the product
            sh: touch MARKS/{{ host.name }}.reinstalled
      - name: restart
        reboot: { timeout: 20s }
"#;

const REBOOT_CODES: &str = r#"phases:
  - name: uninstall
    steps:
      - name: remove the product, which asks for a restart
        sh: touch MARKS/{{ host.name }}.removed; exit 100
        reboot_codes: [100]
        timeout: 20s
        rollback:
          - name: reinstall the product
            sh: touch MARKS/{{ host.name }}.reinstalled
"#;

/// h01 "reboots" and never comes back (its sshd is stopped for good when
/// its reboot command runs); h02 reboots and comes back (its sshd restarts).
///
/// The bodies give the reboot 20 s, and the inventory a connect timeout
/// of 10 s: h02's return (sshd stopped and started again, a fresh
/// handshake) must fit in them on a machine with a load of 20, where 3 s
/// and 2 s did not always hold; h01 costs the test those 20 s.
pub(crate) fn a_reboot_that_never_returns(body: &str) {
    let env = SshdEnv::new();
    let doomed = env.server(1);
    let healthy = env.server(1);
    env.trust(&[doomed.host(), healthy.host()]);
    let marks = marks(&env);
    let mut h01 = entry("h01", &doomed.host());
    h01.extra = format!(
        ", reboot_command: 'touch {}/h01.rebooting'",
        marks.display()
    );
    let mut h02 = entry("h02", &healthy.host());
    h02.extra = format!(", reboot_command: '{}'", healthy.reboot_command());
    let scratch = &Scratch::new();
    scratch.write("inventory.yml", &inventory(&env, &[h01, h02], "10s"));
    scratch.write("playbook.yml", &playbook(body, &marks));
    let mut child = scratch.spawn(RUN);
    wait_for("h01's reboot", || marks.join("h01.rebooting").exists());
    doomed.stop();
    // The reboot's limit is 20 s: the run ends well before this.
    let (code, _) = exit_within(&mut child, Duration::from_secs(120));
    assert_eq!(code, Some(1));
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "unreachable", "{h01}");
    assert!(
        h01["error"]
            .as_str()
            .unwrap()
            .contains("a person must check this host"),
        "{h01}"
    );
    assert!(
        rollback_of(&report, "h01").is_empty(),
        "no rollback on a dead connection"
    );
    assert!(!marks.join("h01.reinstalled").exists());
    let h02 = host(&report, "h02");
    assert_eq!(h02["status"], "succeeded", "{h02}");
    assert!(!marks.join("h02.reinstalled").exists());
    journal_agrees(scratch, &report);
}

#[test]
fn a_reboot_step_that_never_returns_ends_unreachable() {
    a_reboot_that_never_returns(REBOOT_STEP);
}

#[test]
fn a_reboot_code_whose_reboot_never_returns_ends_unreachable_too() {
    a_reboot_that_never_returns(REBOOT_CODES);
}
