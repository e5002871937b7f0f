//! A step's `timeout` holds whatever its action: a command is killed at
//! it, an upload (a `script`'s copy included) is cut off there and leaves
//! no partial file, a reboot waits for its host no longer than it, and a
//! `wait` longer than it is refused before anything runs. The dry run
//! shows each step's limit.
//!
//! The uploads run over a real sshd behind the fault proxy, whose link
//! goes silent mid-transfer for longer than the step's timeout and then
//! comes back: without the limit, each upload would finish then.

use crate::faults::{
    REBOOT_STEP, RUN, UPLOAD_ONLY, a_reboot_that_never_returns, host, journal_agrees,
    keep_a_good_old_copy, names_in, only_the_good_old_copy_is_left, payload, report, rig,
    rollback_of,
};
use crate::harness::Scratch;

use std::time::Duration;

/// `faults`' upload of an installer (whose rollback leaves a mark), with
/// a timeout of 2 s.
fn slow_upload() -> String {
    let limited = UPLOAD_ONLY.replace(
        "dest: MARKS/installer.bin }\n",
        "dest: MARKS/installer.bin }\n        timeout: 2s\n",
    );
    assert_ne!(limited, UPLOAD_ONLY);
    limited
}

#[test]
fn an_upload_slower_than_its_timeout_is_cut_off_and_leaves_the_old_copy() {
    let rig = rig(0);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    keep_a_good_old_copy(&rig);
    rig.write(&slow_upload(), "5s");
    scratch.write("installer.bin", &payload(4_000_000));
    // Soon after the transfer starts, the link goes silent for 5 s.
    proxy.stall_after_bytes(200_000, Duration::from_secs(5));
    scratch.orchestrate(RUN).expect_code(1);

    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    let step = &h01["steps"][0];
    assert_eq!(step["status"], "timed_out", "{h01}");
    let error = h01["error"].as_str().unwrap();
    assert!(
        error.contains("timed out after 2s: the upload was cut off, its partial copy removed"),
        "{error}"
    );
    assert_eq!(
        rollback_of(&report, "h01"),
        [("note the rollback".into(), "ok".into())]
    );
    only_the_good_old_copy_is_left(marks);
    journal_agrees(scratch, &report);
}

/// Without a `timeout`, an upload waits out a stall the connection itself
/// survives (keepalives allow 45 s): a Wi-Fi drop, a VPN renegotiating.
/// The SFTP client's own limit per request (10 s by default in
/// russh-sftp) must not fail it first.
#[test]
fn an_upload_without_a_timeout_waits_out_a_stall_of_fifteen_seconds() {
    let rig = rig(0);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    keep_a_good_old_copy(&rig);
    rig.write(UPLOAD_ONLY, "10s");
    let new_copy = payload(4_000_000);
    scratch.write("installer.bin", &new_copy);
    proxy.stall_after_bytes(500_000, Duration::from_secs(15));
    let run = scratch.orchestrate(RUN);
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "succeeded", "{h01}");
    run.expect_code(0);
    assert!(std::fs::read_to_string(marks.join("installer.bin")).unwrap() == new_copy);
    assert_eq!(names_in(marks), ["installer.bin"]);
}

const SLOW_SCRIPT: &str = r#"phases:
  - name: install
    steps:
      - name: run the big setup script
        script: { src: SCRIPT }
        timeout: 2s
"#;

#[test]
fn a_script_whose_upload_outlasts_its_timeout_never_runs_and_its_copy_is_removed() {
    let rig = rig(0);
    let (marks, scratch, proxy) = (&rig.marks, &rig.scratch, &rig.proxy);
    // Named uniquely: its copy on the host is /tmp/orchestrate-...-NAME.
    let name = format!(
        "big-setup-{}-{}.sh",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    rig.write(&SLOW_SCRIPT.replace("SCRIPT", &name), "5s");
    let padding = payload(4_000_000);
    scratch.write(
        &name,
        &format!(
            "#!/bin/sh\ntouch {}/ran\nexit 0\n# {padding}\n",
            marks.display()
        ),
    );
    proxy.stall_after_bytes(200_000, Duration::from_secs(5));
    scratch.orchestrate(RUN).expect_code(1);

    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["steps"][0]["status"], "timed_out", "{h01}");
    let error = h01["error"].as_str().unwrap();
    assert!(
        error.contains("timed out after 2s before the script ran: the upload was cut off"),
        "{error}"
    );
    assert!(!marks.join("ran").exists(), "the script never ran");
    let copies: Vec<String> = names_in(std::path::Path::new("/tmp"))
        .into_iter()
        .filter(|n| n.ends_with(&name))
        .collect();
    assert!(copies.is_empty(), "the script's copy is left: {copies:?}");
    journal_agrees(scratch, &report);
}

/// `faults`' reboot step, its limit moved from the reboot to the step: a
/// `reboot:` with no limit of its own waits 10 minutes for its host, and
/// the step's `timeout` is the shorter limit, which holds.
fn reboot_limited_by_the_step() -> String {
    let limited = REBOOT_STEP.replace(
        "reboot: { timeout: 20s }\n",
        "reboot: {}\n        timeout: 20s\n",
    );
    assert_ne!(limited, REBOOT_STEP);
    limited
}

#[test]
fn a_reboot_whose_host_is_not_back_within_the_steps_timeout_ends_unreachable() {
    a_reboot_that_never_returns(&reboot_limited_by_the_step());
}

#[test]
fn a_wait_longer_than_its_timeout_is_refused_with_its_place() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - name: settle\n        wait: 1m\n        timeout: 10s\n",
    );
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: a1, address: 127.0.0.1, os: linux, transport: local }\n",
    );
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("playbook.yml:7:18"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`timeout: 10s` is shorter than the `wait: 1m` it limits"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_plan_shows_each_steps_limit_and_a_reboot_waits_the_shorter_of_its_two() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        r#"name: limits
phases:
  - name: p
    steps:
      - { name: quick, sh: "true", timeout: 30s }
      - { name: unbounded, sh: "true" }
      - { name: copy, upload: { src: playbook.yml, dest: /tmp/x }, timeout: 2m }
      - { name: restart, reboot: { timeout: 20m }, timeout: 5m }
      - { name: restart again, reboot: { timeout: 2m } }
      - { name: restart by default, reboot: {} }
      - { name: settle, wait: 10s, timeout: 1m }
"#,
    );
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: a1, address: 127.0.0.1, os: linux }\n",
    );
    let plan = scratch.plan_json("playbook.yml", "inventory.yml");
    let steps = plan["clients"][0]["hosts"][0]["steps"].as_array().unwrap();
    let limits: Vec<(&str, Option<&str>)> = steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["timeout"].as_str()))
        .collect();
    assert_eq!(
        limits,
        [
            ("quick", Some("30s")),
            ("unbounded", None),
            ("copy", Some("2m")),
            ("restart", Some("5m")),
            ("restart again", Some("2m")),
            ("restart by default", Some("10m")),
            ("settle", Some("1m")),
        ]
    );
    assert_eq!(
        steps[3]["command"], "reboot, then wait up to 5m for the host",
        "{}",
        steps[3]
    );
}
