//! The reboot policy (`reboot: now | window | ask` in the inventory, with
//! `reboot_window`): a reboot a step asks for happens at once, waits for
//! the host's maintenance window, or waits for the operator's yes.
//!
//! Hosts behind real OpenSSH servers on loopback, whose `reboot_command`
//! takes the server down and back up (tests/it/support/sshd.rs). The run's
//! clock is set by `ORCHESTRATE_NOW` a few seconds before a window opens,
//! so no test waits for a real night. `ask` is answered on a real terminal
//! (a pty, tests/it/support/terminal.rs), as an operator would.

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::harness::{self, JOURNAL, RUN_REPORTING, Scratch, send, wait_for};
use crate::ssh_runs::inventory;
use crate::support::sshd::{Sshd, SshdEnv};
use crate::support::terminal::Terminal;

/// One step that asks for a reboot (exit 100), then one after it.
const PLAYBOOK: &str = r#"name: reboot policy
phases:
  - name: uninstall
    steps:
      - name: remove, reboot pending
        sh: echo removed; exit 100
        reboot_codes: [100]
        timeout: 60s
        rollback:
          - name: put it back
            sh: echo restored
  - name: install
    steps:
      - name: after the reboot
        sh: echo up again
"#;

/// A Saturday, 22:00 UTC.
const OPENS: &str = "2026-12-05T22:00:00Z";

/// One SSH host `h01` whose settings get `host_keys` (a YAML fragment
/// beginning `, `) and whose client gets `client_keys` (lines of YAML).
fn setup(env: &SshdEnv, host_keys: &str, client_keys: &str) -> (Scratch, Sshd) {
    let server = env.server(1);
    let host = server.host();
    env.trust(std::slice::from_ref(&host));
    let scratch = Scratch::new();
    let inv = inventory(env, std::slice::from_ref(&host), &[])
        .replace(
            "os: linux }",
            &format!(
                "os: linux, reboot_command: '{}'{host_keys} }}",
                server.reboot_command()
            ),
        )
        .replace("  acme:\n", &format!("  acme:\n{client_keys}"));
    scratch.write("inventory.yml", &inv);
    scratch.write("playbook.yml", PLAYBOOK);
    (scratch, server)
}

/// `orchestrate run` (its events logged to `log.jsonl`) with the clock
/// starting at `now`, stdin closed.
fn run_at(scratch: &Scratch, now: &str, extra: &[&str]) -> harness::Run {
    let mut args = run_args();
    args.extend_from_slice(extra);
    let output = scratch
        .command(&args)
        .env("ORCHESTRATE_NOW", now)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    harness::Run::new(output)
}

fn run_args() -> Vec<&'static str> {
    let mut args = RUN_REPORTING.to_vec();
    args.extend(["--log", "log.jsonl"]);
    args
}

fn h01(report: &Value) -> &Value {
    &report["clients"][0]["hosts"][0]
}

/// The events of `kind` in the `--log` file.
fn events(scratch: &Scratch, kind: &str) -> Vec<Value> {
    scratch
        .read("log.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == kind)
        .collect()
}

fn reboots(server: &Sshd) -> usize {
    server.log().matches("Server listening").count() - 1
}

fn seconds_before(at: &str, seconds: i64) -> String {
    let at: DateTime<Utc> = at.parse().unwrap();
    (at - chrono::Duration::seconds(seconds)).to_rfc3339()
}

const WEEKEND_NIGHTS: &str = "    reboot: window\n    reboot_window: { days: [sat, sun], start: '22:00', end: '04:00', tz: UTC }\n";

#[test]
fn a_reboot_outside_the_window_waits_for_it_to_open_then_goes_on() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, "", WEEKEND_NIGHTS);
    let run = run_at(&scratch, &seconds_before(OPENS, 3), &[]);
    run.expect_code(0);
    assert_eq!(reboots(&server), 1);
    let report = scratch.report();
    let step = &h01(&report)["steps"][0];
    assert_eq!(step["status"], "ok");
    // The step held the host until the window opened (3 s on this clock).
    assert!(step["duration_ms"].as_u64().unwrap() >= 2_500, "{step}");
    let waiting = events(&scratch, "reboot_waiting");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        waiting[0]["until"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        OPENS.parse::<DateTime<Utc>>().unwrap()
    );
    assert!(
        run.stdout.contains("WAITING acme/h01") && run.stdout.contains("sat,sun 22:00-04:00 UTC"),
        "{}",
        run.stdout
    );
    // The reboot came after the waiting, as the journal's events say.
    let rebooting = events(&scratch, "rebooting");
    assert_eq!(rebooting.len(), 1);
}

#[test]
fn inside_the_window_the_host_reboots_at_once() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, "", WEEKEND_NIGHTS);
    // Sunday 23:30: open (until Monday 04:00).
    run_at(&scratch, "2026-12-06T23:30:00Z", &[]).expect_code(0);
    assert_eq!(reboots(&server), 1);
    assert!(events(&scratch, "reboot_waiting").is_empty());
}

#[test]
fn sigterm_ends_the_wait_for_the_window_and_rolls_the_host_back_unrebooted() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, "", WEEKEND_NIGHTS);
    let mut child = scratch
        .command(&run_args())
        .env("ORCHESTRATE_NOW", seconds_before(OPENS, 3600))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the reboot to wait", || {
        !events(&scratch, "reboot_waiting").is_empty()
    });
    // `status` reads the journal: the host is waiting, and why.
    let run_id = scratch.newest_run_id();
    let status = scratch.orchestrate(&["status", &run_id, "--state", JOURNAL]);
    assert!(
        status.stdout.contains("waiting to reboot:")
            && status
                .stdout
                .contains("h01: step `remove, reboot pending` asks for a reboot"),
        "{}",
        status.stdout
    );
    send(&child, libc::SIGTERM);
    let (code, took) = harness::exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(reboots(&server), 0);
    let report = scratch.report();
    let host = h01(&report);
    assert_eq!(host["status"], "failed", "{host:#}");
    assert!(
        host["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("the wait for the reboot window was cut short"),
        "{host:#}"
    );
    assert_eq!(host["rollback"][0]["status"], "ok");
}

#[test]
fn ask_without_a_terminal_does_not_reboot_and_the_host_is_rolled_back() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, ", reboot: ask", "");
    let run = run_at(&scratch, OPENS, &[]);
    run.expect_code(1);
    assert_eq!(reboots(&server), 0);
    let report = scratch.report();
    let host = h01(&report);
    assert_eq!(host["status"], "failed");
    let detail = host["steps"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("no terminal to ask") && detail.contains("--yes"),
        "{detail}"
    );
    assert_eq!(host["rollback"][0]["name"], "put it back");
}

#[test]
fn a_reboot_step_that_is_refused_is_not_tried_again() {
    // Its `retries` are for a reboot that failed, not for one that was not
    // allowed: asking again would be refused again (and, with `ask`, ask
    // the operator the same question again).
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, ", reboot: ask", "");
    scratch.write(
        "playbook.yml",
        &PLAYBOOK.replace(
            "      - name: remove, reboot pending\n        sh: echo removed; exit 100\n        reboot_codes: [100]\n",
            "      - name: remove, reboot pending\n        reboot: { timeout: 60s }\n        retries: 2\n        retry_delay: 1s\n",
        ),
    );
    let run = run_at(&scratch, OPENS, &[]);
    run.expect_code(1);
    assert_eq!(reboots(&server), 0);
    let report = scratch.report();
    let step = &h01(&report)["steps"][0];
    assert_eq!(step["name"], "remove, reboot pending");
    assert_eq!(step["status"], "failed");
    assert_eq!(step["attempts"], 1, "{step}");
    assert!(
        step["detail"]
            .as_str()
            .unwrap()
            .contains("no terminal to ask"),
        "{step}"
    );
    assert_eq!(h01(&report)["rollback"][0]["name"], "put it back");
}

#[test]
fn ask_with_yes_reboots() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, ", reboot: ask", "");
    run_at(&scratch, OPENS, &["--yes"]).expect_code(0);
    assert_eq!(reboots(&server), 1);
}

/// `orchestrate run` on a real terminal (a pty), until it asks whether to
/// reboot h01; the terminal, to answer on.
fn asked_on_a_terminal(scratch: &Scratch) -> Terminal {
    let mut command = scratch.command(&run_args());
    command.env("ORCHESTRATE_NOW", OPENS);
    let terminal = Terminal::spawn(command);
    terminal.wait_for("[y/N]", Duration::from_secs(60));
    terminal
}

/// The question as the operator sees it: which host, why, and who is
/// logged on (`who` on this machine: whoever that is here, or nobody).
fn asks_naming_who_is_logged_on(screen: &str) -> bool {
    let asked = "acme/h01: reboot now? (step `remove, reboot pending` asks for a reboot; ";
    let start = match screen.find(asked) {
        Some(at) => at + asked.len(),
        None => return false,
    };
    let rest = &screen[start..];
    (rest.starts_with("nobody is logged on) [y/N]") || rest.starts_with("logged on: "))
        && rest.contains(") [y/N]")
}

#[test]
fn ask_on_a_terminal_answered_yes_reboots_the_host_and_the_run_goes_on() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, ", reboot: ask", "");
    let mut terminal = asked_on_a_terminal(&scratch);
    assert!(
        asks_naming_who_is_logged_on(&terminal.screen()),
        "{}",
        terminal.screen()
    );
    // Nothing rebooted while the question waits.
    assert_eq!(reboots(&server), 0);
    terminal.type_line("y");
    assert_eq!(
        terminal.exit_code(Duration::from_secs(60)),
        Some(0),
        "{}",
        terminal.screen()
    );
    assert_eq!(reboots(&server), 1);
    let report = scratch.report();
    let host = h01(&report);
    assert_eq!(host["status"], "succeeded", "{host:#}");
    assert_eq!(host["steps"][0]["status"], "ok");
    assert_eq!(host["steps"][1]["name"], "after the reboot");
    assert_eq!(host["steps"][1]["status"], "ok");
    assert!(host["rollback"].as_array().unwrap().is_empty(), "{host:#}");
    // The journal's events: waiting for the answer, then the reboot.
    let waiting = events(&scratch, "reboot_waiting");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0]["reason"]
            .as_str()
            .unwrap()
            .contains("waits for the operator's answer (reboot: ask)"),
        "{waiting:?}"
    );
    assert_eq!(events(&scratch, "rebooting").len(), 1);
}

#[test]
fn ask_on_a_terminal_answered_no_leaves_the_host_unrebooted_and_rolled_back() {
    let env = SshdEnv::new();
    let (scratch, server) = setup(&env, ", reboot: ask", "");
    let mut terminal = asked_on_a_terminal(&scratch);
    assert!(
        asks_naming_who_is_logged_on(&terminal.screen()),
        "{}",
        terminal.screen()
    );
    terminal.type_line("n");
    assert_eq!(
        terminal.exit_code(Duration::from_secs(60)),
        Some(1),
        "{}",
        terminal.screen()
    );
    assert_eq!(reboots(&server), 0);
    let report = scratch.report();
    let host = h01(&report);
    assert_eq!(host["status"], "failed", "{host:#}");
    assert_eq!(host["steps"][0]["status"], "failed");
    assert!(
        host["steps"][0]["detail"].as_str().unwrap().contains(
            "the operator did not confirm the reboot (reboot: ask); the host was not rebooted"
        ),
        "{host:#}"
    );
    // The step after the reboot never ran; the step that asked was undone.
    assert_eq!(host["steps"].as_array().unwrap().len(), 1, "{host:#}");
    assert_eq!(host["rollback"][0]["name"], "put it back");
    assert_eq!(host["rollback"][0]["status"], "ok");
    assert!(events(&scratch, "rebooting").is_empty());
}

#[test]
fn the_dry_run_shows_each_hosts_policy_the_nearest_level_winning() {
    let scratch = Scratch::new();
    scratch.write("playbook.yml", PLAYBOOK);
    scratch.write(
        "inventory.yml",
        "defaults:\n  transport: local\n  reboot: window\n  reboot_window: { days: [sat, sun], start: '22:00', end: '04:00', tz: America/New_York }\nclients:\n  acme:\n    hosts:\n      - { name: dc01, address: 127.0.0.1, os: linux }\n      - { name: rds01, address: 127.0.0.1, os: linux, reboot: ask }\n      - { name: ws01, address: 127.0.0.1, os: linux, reboot: now }\n",
    );
    let text = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"]);
    text.expect_code(0);
    for line in [
        "reboots in the window sat,sun 22:00-04:00 America/New_York: dc01",
        "reboots after the operator confirms (ask): rds01",
        "reboots at once (now): ws01",
    ] {
        assert!(text.stdout.contains(line), "{line}\n{}", text.stdout);
    }
    let plan = scratch.plan_json("playbook.yml", "inventory.yml");
    let hosts = plan["clients"][0]["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["reboot"]["policy"], "window");
    assert_eq!(
        hosts[0]["reboot"]["window"],
        "sat,sun 22:00-04:00 America/New_York"
    );
    assert_eq!(hosts[1]["reboot"]["policy"], "ask");
    assert_eq!(hosts[2]["reboot"]["policy"], "now");
}

/// `validate` of PLAYBOOK on `inventory`, which must fail: its stderr.
fn refused(inventory: &str) -> String {
    let scratch = Scratch::new();
    scratch.write("playbook.yml", PLAYBOOK);
    scratch.write("inventory.yml", inventory);
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    run.stderr.clone()
}

#[test]
fn a_window_policy_without_a_window_and_a_bad_window_are_errors_at_their_place() {
    let no_window = refused(
        "clients:\n  acme:\n    hosts:\n      - { name: dc01, address: 127.0.0.1, os: linux, transport: local, reboot: window }\n",
    );
    assert!(
        no_window.contains("inventory.yml:4:") && no_window.contains("needs a `reboot_window`"),
        "{no_window}"
    );
    let bad_time = refused(
        "clients:\n  acme:\n    reboot: window\n    reboot_window: { start: '10pm', end: '04:00' }\n    hosts:\n      - { name: dc01, address: 127.0.0.1, os: linux, transport: local }\n",
    );
    assert!(
        bad_time.contains("inventory.yml:4:") && bad_time.contains("\"22:00\""),
        "{bad_time}"
    );
}
