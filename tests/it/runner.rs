//! `orchestrate run`: staged waves per client, failure budgets, rollback.
//!
//! Every host here is a `local` host working in its own folder; its steps
//! leave files there, and the tests check those files and the JSON report,
//! as an operator would check the endpoints and the report.

use crate::harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::Scratch;
use serde_json::Value;

/// A fleet of local hosts: `clients` is (client name, number of hosts).
/// Each host gets `dir` (its own folder) and `n` (its number) as vars.
fn fleet(scratch: &Scratch, clients: &[(&str, usize)], client_extra: &str) -> PathBuf {
    let mut text = String::from("clients:\n");
    for (client, count) in clients {
        text.push_str(&format!("  {client}:\n{client_extra}    hosts:\n"));
        for i in 1..=*count {
            let name = format!("{client}-{i:02}");
            let dir = scratch.path().join("hosts").join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            text.push_str(&format!(
                "      - {{ name: {name}, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}', n: {i} }} }}\n",
                dir.display()
            ));
        }
    }
    scratch.write("inventory.yml", &text)
}

fn host_dir(scratch: &Scratch, host: &str) -> PathBuf {
    scratch.path().join("hosts").join(host)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run_playbook(scratch: &Scratch, extra: &[&str]) -> (harness::Run, Value) {
    let mut args = vec![
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--report-json",
        "report.json",
    ];
    args.extend_from_slice(extra);
    let run = scratch.orchestrate(&args);
    let report =
        serde_json::from_str(&read(&scratch.path().join("report.json"))).unwrap_or_else(|e| {
            panic!(
                "report.json ({e}); stdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            )
        });
    (run, report)
}

fn client<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn statuses(report: &Value, client_name: &str) -> Vec<(String, String)> {
    client(report, client_name)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(report: &Value, client_name: &str, status: &str) -> usize {
    statuses(report, client_name)
        .iter()
        .filter(|(_, s)| s == status)
        .count()
}

/// A playbook whose `migrate` step fails on the hosts listed in `failing`
/// (by host number); every step logs to the host's folder.
fn playbook_failing_on(failing: &[usize], budget: &str, waves: &str) -> String {
    let list: Vec<String> = failing.iter().map(|n| n.to_string()).collect();
    format!(
        r#"name: budget test
waves: {waves}
failure_budget: {budget}
phases:
  - name: migrate
    steps:
      - name: migrate
        sh: |
          echo migrated >> {{{{ dir }}}}/log
          for bad in {failing}; do [ "{{{{ n }}}}" = "$bad" ] && exit 1; done
          exit 0
"#,
        failing = if list.is_empty() {
            "none".to_string()
        } else {
            list.join(" ")
        }
    )
}

#[test]
fn a_canary_failure_with_budget_0_halts_that_client_while_another_completes() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 5), ("globex", 5)], "");
    // Host number 1 of every client fails: for acme it is the canary...
    // but globex's hosts are numbered 1..5 too, so give globex its own playbook var.
    scratch.write(
        "playbook.yml",
        r#"name: canary
waves: [1, "100%"]
failure_budget: 0
phases:
  - name: migrate
    steps:
      - sh: |
          echo ran >> {{ dir }}/log
          [ "{{ host.client }}-{{ n }}" != "acme-1" ]
"#,
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    assert_eq!(client(&report, "acme")["status"], "halted");
    assert_eq!(
        count(&report, "acme", "failed"),
        1,
        "the canary failed and was rolled back"
    );
    assert_eq!(
        count(&report, "acme", "not_started"),
        4,
        "wave 2 never started"
    );
    for i in 2..=5 {
        assert_eq!(
            read(&host_dir(&scratch, &format!("acme-{i:02}")).join("log")),
            "",
            "acme-{i:02} untouched"
        );
    }
    assert_eq!(client(&report, "globex")["status"], "succeeded");
    assert_eq!(count(&report, "globex", "succeeded"), 5);
    assert_eq!(report["status"], "halted");
    assert!(run.stdout.contains("acme: HALTED"), "{}", run.stdout);
}

#[test]
fn a_budget_of_2_tolerates_two_failures_and_halts_on_the_third() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 8)], "");
    // One host per wave, so the order of failures is fixed: 2, 4 and 6 fail.
    scratch.write(
        "playbook.yml",
        &playbook_failing_on(&[2, 4, 6], "2", "[1, 1, 1, 1, 1, 1, 1, 1]"),
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    let hosts = statuses(&report, "acme");
    let expected = [
        "succeeded",
        "failed",
        "succeeded",
        "failed",
        "succeeded",
        "failed",
        "not_started",
        "not_started",
    ];
    let got: Vec<&str> = hosts.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(got, expected);
    assert_eq!(client(&report, "acme")["status"], "halted");
    assert!(
        client(&report, "acme")["halted"]
            .as_str()
            .unwrap()
            .contains("3 hosts failed")
    );
}

#[test]
fn a_budget_of_100_percent_never_halts_even_when_a_whole_wave_fails() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 6)], "");
    scratch.write(
        "playbook.yml",
        &playbook_failing_on(&[1, 2, 3, 4, 5, 6], "\"100%\"", "[1, 2, \"100%\"]"),
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    assert_eq!(
        count(&report, "acme", "failed"),
        6,
        "every host ran, and failed"
    );
    assert_eq!(
        client(&report, "acme")["status"],
        "failed",
        "failed, not halted"
    );
    assert!(client(&report, "acme")["halted"].is_null());
}

const ROLLBACK_PLAYBOOK: &str = r#"name: rollback order
waves: ["100%"]
failure_budget: "100%"
on_failure:
  - name: make sure some antivirus is on
    sh: echo on_failure >> {{ dir }}/undo
phases:
  - name: precheck
    steps:
      - name: look
        sh: echo look >> {{ dir }}/log
        rollback:
          - sh: echo undo-look >> {{ dir }}/undo
  - name: uninstall
    steps:
      - name: remove old
        sh: echo remove >> {{ dir }}/log
        marks: protection_off
        rollback:
          - sh: echo undo-remove-1 >> {{ dir }}/undo
          - sh: echo undo-remove-2 >> {{ dir }}/undo
  - name: install
    steps:
      - name: install new
        sh: echo install >> {{ dir }}/log
        rollback:
          - sh: echo undo-install >> {{ dir }}/undo && exit {{ rollback_exit }}
      - name: configure
        sh: echo configure >> {{ dir }}/log; exit 1
        rollback:
          - sh: echo undo-configure >> {{ dir }}/undo
      - name: never reached
        sh: echo unreachable-step >> {{ dir }}/log
        marks: protection_on
"#;

#[test]
fn rollback_runs_in_exactly_reverse_order_with_on_failure_last() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        &format!("vars: {{ rollback_exit: 0 }}\n{ROLLBACK_PLAYBOOK}"),
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    let dir = host_dir(&scratch, "acme-01");
    assert_eq!(read(&dir.join("log")), "look\nremove\ninstall\nconfigure\n");
    assert_eq!(
        read(&dir.join("undo")),
        "undo-configure\nundo-install\nundo-remove-1\nundo-remove-2\nundo-look\non_failure\n"
    );
    let host = &client(&report, "acme")["hosts"][0];
    assert_eq!(host["status"], "failed");
    assert!(
        host["error"]
            .as_str()
            .unwrap()
            .contains("step `configure` (install) exited with 1")
    );
    let rollback: Vec<&str> = host["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(rollback, ["ok"; 6]);
    assert!(
        host["protection_gap_ms"].as_u64().is_some(),
        "protection was off from `remove old` until rolled back"
    );
}

#[test]
fn a_failing_rollback_is_rollback_failed_and_exit_3() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        &format!("vars: {{ rollback_exit: 7 }}\n{ROLLBACK_PLAYBOOK}"),
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(3);
    let dir = host_dir(&scratch, "acme-01");
    // The failing undo does not stop the rest: each may restore something.
    assert_eq!(
        read(&dir.join("undo")),
        "undo-configure\nundo-install\nundo-remove-1\nundo-remove-2\nundo-look\non_failure\n"
    );
    let host = &client(&report, "acme")["hosts"][0];
    assert_eq!(host["status"], "rollback_failed");
    assert_eq!(report["status"], "rollback_failed");
    assert!(
        host["error"]
            .as_str()
            .unwrap()
            .contains("a person must look")
    );
    let failed: Vec<&Value> = host["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["exit_code"], 7);
}

#[test]
fn a_timeout_kills_the_command_and_what_it_started() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        r#"name: timeout
phases:
  - name: p
    steps:
      - name: hangs
        timeout: 500ms
        sh: |
          (sleep 1.5; touch {{ dir }}/child-survived) &
          sleep 30
"#,
    );
    let started = std::time::Instant::now();
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the run did not wait for `sleep 30`"
    );
    let step = &client(&report, "acme")["hosts"][0]["steps"][0];
    assert_eq!(step["status"], "timed_out");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !host_dir(&scratch, "acme-01")
            .join("child-survived")
            .exists(),
        "the background child was killed too"
    );
}

#[test]
fn retries_and_until() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        r#"name: retries
phases:
  - name: p
    steps:
      - name: flaky, third time lucky
        retries: 3
        retry_delay: 10ms
        sh: |
          echo x >> {{ dir }}/tries
          [ "$(wc -l < {{ dir }}/tries)" -ge 3 ]
      - name: wait until ready
        retries: 5
        retry_delay: 10ms
        until: result.stdout | trim == "ready"
        sh: |
          echo x >> {{ dir }}/polls
          [ "$(wc -l < {{ dir }}/polls)" -ge 2 ] && echo ready || echo starting
      - name: gives up
        retries: 1
        retry_delay: 10ms
        sh: echo x >> {{ dir }}/doomed; exit 4
"#,
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    let steps = &client(&report, "acme")["hosts"][0]["steps"];
    assert_eq!(steps[0]["status"], "ok");
    assert_eq!(steps[0]["attempts"], 3);
    assert_eq!(steps[1]["status"], "ok");
    assert_eq!(steps[1]["attempts"], 2);
    assert_eq!(steps[2]["status"], "failed");
    assert_eq!(steps[2]["attempts"], 2, "one try and one retry");
    assert_eq!(
        read(&host_dir(&scratch, "acme-01").join("doomed"))
            .lines()
            .count(),
        2
    );
}

#[test]
fn captured_values_feed_when_and_later_templates() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 2)], "");
    scratch.write(
        "playbook.yml",
        r#"name: captures
waves: ["100%"]
phases:
  - name: precheck
    steps:
      - name: find products
        sh: |
          if [ {{ n }} = 1 ]; then echo '[{"name": "KESL", "package": "kesl"}]'; else echo '[]'; fi
        capture: { as: products, parse: json }
      - name: read settings
        sh: printf '[Exclusions.item_0000]\nPath=/opt/app data\n'
        capture: { as: settings, parse: ini }
  - name: uninstall
    steps:
      - name: remove
        when: products | length > 0
        sh: echo removing {{ products[0].package | sh_quote }} >> {{ dir }}/log
      - name: carry exclusions
        sh: echo {{ settings["Exclusions.item_0000"].Path | sh_quote }} >> {{ dir }}/exclusions
"#,
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(0);
    assert_eq!(
        read(&host_dir(&scratch, "acme-01").join("log")),
        "removing kesl\n"
    );
    assert_eq!(
        read(&host_dir(&scratch, "acme-02").join("log")),
        "",
        "nothing to remove there"
    );
    for host in ["acme-01", "acme-02"] {
        assert_eq!(
            read(&host_dir(&scratch, host).join("exclusions")),
            "/opt/app data\n"
        );
    }
    let second = &client(&report, "acme")["hosts"][1]["steps"][2];
    assert_eq!(second["status"], "skipped");
    assert_eq!(second["detail"], "when `products | length > 0` is false");
}

#[test]
fn check_mode_runs_only_the_safe_steps_and_says_what_the_others_would_do() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        r#"name: check
phases:
  - name: precheck
    steps:
      - name: find
        check_safe: true
        sh: echo found >> {{ dir }}/log; echo kesl
        capture: { as: package }
  - name: uninstall
    steps:
      - name: remove
        sh: echo removed >> {{ dir }}/log
      - name: only if absent
        when: package == "none"
        sh: echo never >> {{ dir }}/log
"#,
    );
    let (run, report) = run_playbook(&scratch, &["--check"]);
    run.expect_code(0);
    assert_eq!(
        read(&host_dir(&scratch, "acme-01").join("log")),
        "found\n",
        "only the safe step ran"
    );
    let steps = &client(&report, "acme")["hosts"][0]["steps"];
    assert_eq!(steps[0]["status"], "ok");
    assert_eq!(steps[1]["status"], "skipped");
    let dir = host_dir(&scratch, "acme-01");
    assert_eq!(
        steps[1]["detail"],
        format!("would run: echo removed >> {}/log", dir.display())
    );
    assert_eq!(steps[2]["detail"], "when `package == \"none\"` is false");
    assert_eq!(report["check"], true);
}

/// Intervals [start, end] that steps wrote, in nanoseconds.
fn max_overlap(lines: &str) -> usize {
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for line in lines.lines() {
        let mut parts = line.split_whitespace();
        let start: u128 = parts.next().unwrap().parse().unwrap();
        let end: u128 = parts.next().unwrap().parse().unwrap();
        edges.push((start, 1));
        edges.push((end, -1));
    }
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

const TIMED_PLAYBOOK: &str = r#"name: parallelism
waves: ["100%"]
concurrency: CONCURRENCY
phases:
  - name: p
    steps:
      - sh: |
          start=$(date +%s%N); sleep 0.3; end=$(date +%s%N)
          echo "$start $end" >> SPANS
"#;

#[test]
fn forks_and_concurrency_bound_parallelism() {
    for (concurrency, forks, clients, expected) in [
        (10, "2", 1, 2),
        (3, "50", 1, 3),
        (2, "50", 2, 4),
        (4, "3", 2, 3),
    ] {
        let scratch = Scratch::new();
        let spans = scratch.path().join("spans");
        let names: Vec<(String, usize)> = (0..clients).map(|c| (format!("c{c}"), 6)).collect();
        let refs: Vec<(&str, usize)> = names.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        fleet(&scratch, &refs, "");
        scratch.write(
            "playbook.yml",
            &TIMED_PLAYBOOK
                .replace("CONCURRENCY", &concurrency.to_string())
                .replace("SPANS", &spans.display().to_string()),
        );
        let (run, _) = run_playbook(&scratch, &["--forks", forks]);
        run.expect_code(0);
        let lines = read(&spans);
        assert_eq!(lines.lines().count(), 6 * clients);
        assert_eq!(
            max_overlap(&lines),
            expected,
            "concurrency {concurrency}, forks {forks}, {clients} clients: at most {expected} hosts at once, and that many"
        );
    }
}

#[test]
fn confirm_between_waves_without_a_terminal_halts_with_advice_and_yes_answers() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 3)], "");
    scratch.write(
        "playbook.yml",
        "name: confirm\nwaves: [1, \"100%\"]\npause_between_waves: confirm\nphases:\n  - name: p\n    steps:\n      - sh: echo ran >> {{ dir }}/log\n",
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    assert_eq!(client(&report, "acme")["status"], "halted");
    assert!(
        client(&report, "acme")["halted"]
            .as_str()
            .unwrap()
            .contains("run with --yes")
    );
    assert_eq!(count(&report, "acme", "succeeded"), 1);
    assert_eq!(count(&report, "acme", "not_started"), 2);

    let (run, report) = run_playbook(&scratch, &["--yes"]);
    run.expect_code(0);
    assert_eq!(count(&report, "acme", "succeeded"), 3);
}

#[test]
fn the_first_ctrl_c_finishes_running_steps_rolls_back_half_done_hosts_and_exits_130() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 6)], "");
    scratch.write(
        "playbook.yml",
        r#"name: interrupt
waves: [2, "100%"]
concurrency: 2
phases:
  - name: uninstall
    steps:
      - name: remove old
        sh: echo removed >> {{ dir }}/log; touch {{ dir }}/../started-{{ n }}; sleep 1
        marks: protection_off
        rollback:
          - sh: echo restored >> {{ dir }}/log
  - name: install
    steps:
      - name: install new
        sh: echo installed >> {{ dir }}/log
        marks: protection_on
"#,
    );
    let mut child = scratch.spawn(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--report-json",
        "report.json",
    ]);
    // Wait until the first wave's hosts are in `remove old`, then Ctrl-C.
    let hosts = scratch.path().join("hosts");
    harness::wait_for("the first wave to be in `remove old`", || {
        hosts.join("started-1").exists() && hosts.join("started-2").exists()
    });
    harness::ctrl_c(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let report: Value = serde_json::from_str(&read(&scratch.path().join("report.json"))).unwrap();
    assert_eq!(report["status"], "interrupted");
    for (name, status) in statuses(&report, "acme") {
        let log = read(&host_dir(&scratch, &name).join("log"));
        match status.as_str() {
            // Caught between uninstall and install: put back as it was.
            "failed" => assert_eq!(log, "removed\nrestored\n", "{name}"),
            "not_started" => assert_eq!(log, "", "{name} was never touched"),
            other => panic!("{name}: unexpected {other}; log: {log}"),
        }
    }
    assert_eq!(
        count(&report, "acme", "failed"),
        2,
        "the two running hosts finished their step and were rolled back"
    );
    assert_eq!(count(&report, "acme", "not_started"), 4);
}

#[test]
fn sensitive_output_stays_out_of_the_report_and_the_log_and_secrets_are_masked() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        r#"name: sensitive
phases:
  - name: p
    steps:
      - name: prints a license key
        sensitive: true
        sh: echo LICENSE-KEY-4711; exit 1
      - name: never
        sh: "true"
on_failure:
  - name: echoes the secret
    sh: echo token={{ secret(name="MSP_TEST_TOKEN_Q") }}; echo shown-output
"#,
    );
    let run = scratch.orchestrate_env(
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
            "--log",
            "events.jsonl",
        ],
        &[("MSP_TEST_TOKEN_Q", "tok-9f8e7d")],
    );
    run.expect_code(1);
    let log = read(&scratch.path().join("events.jsonl"));
    let report = read(&scratch.path().join("report.json"));
    for (name, text) in [
        ("log", &log),
        ("report", &report),
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
    ] {
        assert!(
            !text.contains("LICENSE-KEY-4711"),
            "sensitive output in the {name}"
        );
        assert!(!text.contains("tok-9f8e7d"), "a secret in the {name}");
    }
    // The log holds one JSON event per line, with the masked secret.
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert!(events.iter().all(|e| e["time"].is_string()));
    assert!(
        log.contains("token=***"),
        "not sensitive: shown, with the secret masked"
    );
}

#[test]
fn a_reboot_on_a_local_host_is_a_clear_step_failure() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        "name: reboot\nphases:\n  - name: p\n    steps:\n      - name: restart\n        reboot: { timeout: 1m }\n",
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    let host = &client(&report, "acme")["hosts"][0];
    assert_eq!(host["status"], "failed");
    assert!(
        host["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("the local transport cannot reboot")
    );
}

#[test]
fn a_run_prints_its_run_id_first_and_a_summary_last() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 2), ("globex", 1)], "");
    scratch.write(
        "playbook.yml",
        &playbook_failing_on(&[2], "\"100%\"", "[\"100%\"]"),
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(1);
    let first = run.stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!("run id: {}", report["run_id"].as_str().unwrap())
    );
    let table: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("client "))
        .collect();
    assert!(
        table[1]
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&["acme", "failed", "1", "1"]),
        "{table:?}"
    );
    assert!(
        table[2]
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&["globex", "succeeded", "1", "0"]),
        "{table:?}"
    );
    // --format json: the report on stdout, nothing else.
    let run = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--format",
        "json",
    ]);
    assert_eq!(run.json()["clients"].as_array().unwrap().len(), 2);
}

/// Runs `orchestrate ARGS` on a pseudo-terminal (util-linux `script`), typing
/// `input`; returns the exit code and what the terminal showed.
fn on_a_terminal(scratch: &Scratch, args: &str, input: &str) -> (i32, String) {
    use std::io::Write;
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_orchestrate"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(scratch.path())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).replace('\r', ""),
    )
}

#[test]
fn on_a_terminal_confirm_asks_between_waves_and_progress_bars_show_counts() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 3)], "");
    scratch.write(
        "playbook.yml",
        "name: confirm\nwaves: [1, \"100%\"]\npause_between_waves: confirm\nphases:\n  - name: p\n    steps:\n      - sh: echo ran >> {{ dir }}/log\n",
    );
    let (code, screen) = on_a_terminal(
        &scratch,
        "run playbook.yml -i inventory.yml --report-json yes.json",
        "y\n",
    );
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("acme: start wave 2? (0 of 0 allowed failures so far) [y/N]"),
        "{screen}"
    );
    assert!(screen.contains("all clients ["), "an overall bar: {screen}");
    assert!(screen.contains("3/3 hosts"), "{screen}");
    assert!(
        screen.contains("acme: running 0  ok 3"),
        "a bar per client with counts: {screen}"
    );

    let (code, screen) = on_a_terminal(
        &scratch,
        "run playbook.yml -i inventory.yml --report-json no.json",
        "n\n",
    );
    assert_eq!(code, 1, "{screen}");
    let report: Value = serde_json::from_str(&read(&scratch.path().join("no.json"))).unwrap();
    assert_eq!(client(&report, "acme")["status"], "halted");
    assert!(
        client(&report, "acme")["halted"]
            .as_str()
            .unwrap()
            .contains("did not confirm wave 2")
    );
}

#[test]
fn a_pause_between_waves_waits_that_long() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 2)], "");
    scratch.write(
        "playbook.yml",
        "name: pause\nwaves: [1, \"100%\"]\npause_between_waves: 1500ms\nphases:\n  - name: p\n    steps:\n      - sh: \"true\"\n",
    );
    let (run, report) = run_playbook(&scratch, &[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("acme: waiting 1500ms before wave 2"),
        "{}",
        run.stdout
    );
    let waves = client(&report, "acme")["waves"].as_array().unwrap().clone();
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let gap = time(&waves[1]["started_at"]) - time(&waves[0]["finished_at"]);
    assert!(
        gap.num_milliseconds() >= 1500,
        "wave 2 started {gap} after wave 1 ended"
    );
}

#[test]
fn a_secret_read_only_by_a_run_time_template_is_masked_and_required_up_front() {
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 1)], "");
    scratch.write(
        "playbook.yml",
        r#"name: late secret
vars: { password_secret: LATE_KES_PW_Q }
phases:
  - name: precheck
    steps:
      - sh: |
          echo '{"code": "{ABC-123}"}'
        capture: { as: product, parse: json }
  - name: uninstall
    steps:
      - name: remove with password
        sh: echo msiexec /x {{ product.code }} KLPASSWD={{ secret(name=password_secret) }} >&2
"#,
    );
    // Not set: the plan fails before anything runs, naming the secret.
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("secret `LATE_KES_PW_Q` is not set"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&host_dir(&scratch, "acme-01").join("log")), "");

    let run = scratch.orchestrate_env(
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
            "--log",
            "log.jsonl",
            "-v",
        ],
        &[("LATE_KES_PW_Q", "hunter2-late")],
    );
    run.expect_code(0);
    let everything = format!(
        "{}{}{}{}",
        run.stdout,
        run.stderr,
        read(&scratch.path().join("report.json")),
        read(&scratch.path().join("log.jsonl"))
    );
    assert!(!everything.contains("hunter2-late"), "{everything}");
    assert!(read(&scratch.path().join("report.json")).contains("KLPASSWD=***"));
}

#[test]
fn a_question_waiting_on_the_terminal_holds_up_no_other_client() {
    use std::io::Write;
    let scratch = Scratch::new();
    fleet(&scratch, &[("acme", 2), ("globex", 1)], "");
    // globex has no pause; its only host fails and must be rolled back
    // while acme waits for its operator.
    let inventory = read(&scratch.path().join("inventory.yml"))
        .replace("  globex:\n", "  globex:\n    pause_between_waves: 0s\n");
    scratch.write("inventory.yml", &inventory);
    scratch.write(
        "playbook.yml",
        r#"name: confirm
waves: [1, "100%"]
failure_budget: "100%"
pause_between_waves: confirm
phases:
  - name: p
    steps:
      - sh: echo ran >> {{ dir }}/log; [ "{{ host.client }}" != globex ]
        rollback:
          - sh: sleep 0.3; echo undone >> {{ dir }}/log
"#,
    );
    let command = format!(
        "{} run playbook.yml -i inventory.yml",
        env!("CARGO_BIN_EXE_orchestrate")
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(scratch.path())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let globex = host_dir(&scratch, "globex-01").join("log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read(&globex) != "ran\nundone\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "globex's rollback was held up: {:?}",
            read(&globex)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        read(&host_dir(&scratch, "acme-02").join("log")),
        "",
        "acme still waits"
    );
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(read(&host_dir(&scratch, "acme-02").join("log")), "ran\n");
}
