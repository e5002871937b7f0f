//! The journal, `resume`, `status` and `report`: a crash, a closed laptop
//! or a Ctrl-C never loses track of an endpoint.
//!
//! Every host is a `local` host whose steps append their name to a file in
//! the host's own folder, so the tests can count how often each step really
//! ran, across the killed run and its resumption.
//!
//! Each test runs twice, on a SQLite journal and on a PostgreSQL one
//! (`name::sqlite`, `name::postgres`): the same guarantees on both.

use crate::harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::journals::Journal;
use harness::{Scratch, ctrl_c, wait_for};
use serde_json::Value;

fn fleet(scratch: &Scratch, hosts: usize) {
    let mut text = String::from("clients:\n  acme:\n    hosts:\n");
    for i in 1..=hosts {
        let dir = scratch.path().join("hosts").join(format!("h{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        text.push_str(&format!(
            "      - {{ name: h{i:02}, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}', n: {i} }} }}\n",
            dir.display()
        ));
    }
    scratch.write("inventory.yml", &text);
}

/// Four phases; every step logs its name once per execution. `slow` is how
/// long the uninstall step takes (room to kill the run in the middle).
fn playbook(slow: &str, extra_condition: &str) -> String {
    format!(
        r#"name: migration
waves: [1, 3, "100%"]
concurrency: 3
failure_budget: 0
phases:
  - name: precheck
    steps:
      - name: look
        check_safe: true
        sh: echo look >> {{{{ dir }}}}/log; echo kesl
        capture: {{ as: product }}
  - name: uninstall
    steps:
      - name: remove
        sh: touch {{{{ dir }}}}/removing; sleep {slow}; echo remove-{{{{ product }}}} >> {{{{ dir }}}}/log
        marks: protection_off
        rollback:
          - sh: echo restore >> {{{{ dir }}}}/log
  - name: install
    steps:
      - name: install
        sh: echo install >> {{{{ dir }}}}/log{extra_condition}
        marks: protection_on
  - name: verify
    steps:
      - name: verify
        sh: echo verify >> {{{{ dir }}}}/log
"#
    )
}

fn log_of(scratch: &Scratch, host: &str) -> Vec<String> {
    std::fs::read_to_string(scratch.path().join("hosts").join(host).join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn hosts_running_remove(scratch: &Scratch, count: usize) -> usize {
    (1..=count)
        .filter(|i| {
            scratch
                .path()
                .join("hosts")
                .join(format!("h{i:02}"))
                .join("removing")
                .exists()
        })
        .count()
}

/// The one run in the journal.
fn only_run_id(scratch: &Scratch, state: &str) -> String {
    let runs = scratch
        .orchestrate(&["status", "--state", state, "--format", "json"])
        .expect_code(0)
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    runs[0]["run_id"].as_str().unwrap().to_string()
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["clients"][0]["hosts"]
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

fn counts(lines: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line.clone()).or_insert(0) += 1;
    }
    counts
}

fn a_run_killed_mid_wave_resumes_without_repeating_a_completed_step(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 7);
    scratch.write("playbook.yml", &playbook("1", ""));
    let mut child = scratch.spawn(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        state,
    ]);
    // Wave 2 (h02..h04) is in its slow step: kill the controller outright.
    wait_for("wave 2 to be mid-way", || {
        hosts_running_remove(&scratch, 7) >= 3
    });
    // What had completed (each step logs its name when it ends); the journal
    // has had a moment to record it before the kill.
    let completed: BTreeMap<String, Vec<String>> = (1..=7)
        .map(|i| format!("h{i:02}"))
        .map(|h| (h.clone(), log_of(&scratch, &h)))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap(); // SIGKILL: no handler, no goodbye
    child.wait().unwrap();
    // Commands already running on the hosts go on without the controller;
    // let them end, as they would on real endpoints.
    std::thread::sleep(Duration::from_millis(1200));
    let run_id = only_run_id(&scratch, state);

    let status = scratch.orchestrate(&["status", &run_id, "--state", state]);
    status.expect_code(0);
    assert!(status.stdout.contains("unfinished"), "{}", status.stdout);

    let resumed = scratch.orchestrate(&[
        "resume",
        &run_id,
        "--state",
        state,
        "--report-json",
        "report.json",
    ]);
    resumed.expect_code(0);
    assert!(
        resumed
            .stdout
            .starts_with(&format!("run id: {run_id} (resumed)")),
        "{}",
        resumed.stdout
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "succeeded");
    assert!(
        statuses(&report).values().all(|s| s == "succeeded"),
        "{:?}",
        statuses(&report)
    );

    for (host, done_before_kill) in &completed {
        let log = counts(&log_of(&scratch, host));
        for step in ["remove-kesl", "install", "verify"] {
            if done_before_kill.iter().any(|l| l == step) {
                assert_eq!(
                    log.get(step),
                    Some(&1),
                    "{host}: `{step}` had completed: not run again: {log:?}"
                );
            }
            assert!(log.contains_key(step), "{host}: `{step}` ran: {log:?}");
        }
        assert!(!log.contains_key("restore"), "{host} was never rolled back");
        // Precheck runs again only on hosts caught mid-way (fresh captures).
        assert!((1..=2).contains(&log["look"]), "{host}: {log:?}");
    }
    assert!(
        completed
            .values()
            .filter(|l| l.iter().any(|s| s == "remove-kesl"))
            .count()
            >= 1,
        "the test killed the run after some step had completed: {completed:?}"
    );
    // The canary finished before the kill and was not touched again.
    assert_eq!(
        log_of(&scratch, "h01"),
        ["look", "remove-kesl", "install", "verify"]
    );

    // The run is now finished in the journal; the report from the journal
    // says the same as the one written at the end of the run.
    let from_journal = scratch
        .orchestrate(&["report", &run_id, "--format", "json", "--state", state])
        .expect_code(0)
        .json();
    assert_eq!(from_journal["status"], "succeeded");
    assert_eq!(statuses(&from_journal), statuses(&report));
    let runs = scratch
        .orchestrate(&["status", "--state", state, "--format", "json"])
        .expect_code(0)
        .json();
    assert_eq!(runs[0]["status"], "succeeded");
    assert!(runs[0]["finished_at"].is_string());
}

fn a_run_stopped_with_ctrl_c_resumes_to_the_end(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 7);
    scratch.write("playbook.yml", &playbook("1", ""));
    let mut child = scratch.spawn(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        state,
    ]);
    wait_for("wave 2 to be mid-way", || {
        hosts_running_remove(&scratch, 7) >= 3
    });
    ctrl_c(&child);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let run_id = only_run_id(&scratch, state);
    let before: BTreeMap<String, Vec<String>> = (1..=7)
        .map(|i| format!("h{i:02}"))
        .map(|h| (h.clone(), log_of(&scratch, &h)))
        .collect();

    let resumed = scratch.orchestrate(&["resume", &run_id, "--state", state, "--format", "json"]);
    resumed.expect_code(0);
    let report = resumed.json();
    assert!(
        statuses(&report).values().all(|s| s == "succeeded"),
        "{:?}",
        statuses(&report)
    );
    for (host, earlier) in before {
        let now = log_of(&scratch, &host);
        if earlier.last().map(String::as_str) == Some("verify") {
            assert_eq!(now, earlier, "{host} had finished: not touched again");
        } else if earlier.is_empty() {
            assert_eq!(
                now,
                ["look", "remove-kesl", "install", "verify"],
                "{host} ran normally"
            );
        } else if earlier == ["look"] {
            // Stopped after its (read-only) precheck: nothing to undo.
            assert_eq!(
                now[1..],
                ["look", "remove-kesl", "install", "verify"],
                "{host}"
            );
        } else {
            // Caught by Ctrl-C mid-way: it was rolled back, then migrated.
            assert_eq!(earlier, ["look", "remove-kesl", "restore"], "{host}");
            assert_eq!(
                now[3..],
                ["look", "remove-kesl", "install", "verify"],
                "{host}"
            );
        }
    }
}

fn a_halted_client_resumes_after_the_operator_fixes_the_cause(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 5);
    // Host 3 cannot install until the operator creates a `fixed` file.
    let fixed = scratch.path().join("fixed");
    scratch.write(
        "playbook.yml",
        &playbook(
            "0",
            &format!("; [ {{{{ n }}}} != 3 ] || [ -e {} ]", fixed.display()),
        ),
    );
    let first = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        state,
    ]);
    first.expect_code(1);
    let run_id = only_run_id(&scratch, state);
    let status = scratch
        .orchestrate(&["status", &run_id, "--state", state, "--format", "json"])
        .expect_code(0)
        .json();
    assert_eq!(status["clients"][0]["status"], "halted");
    assert!(
        status["clients"][0]["halted"]
            .as_str()
            .unwrap()
            .contains("1 host failed")
    );
    assert_eq!(status["clients"][0]["hosts"]["failed"], 1);
    assert_eq!(status["clients"][0]["hosts"]["not_started"], 1);
    assert_eq!(status["clients"][0]["current_wave"], 2);
    assert_eq!(
        log_of(&scratch, "h03"),
        ["look", "remove-kesl", "install", "restore"]
    );

    std::fs::write(&fixed, "").unwrap();
    let resumed = scratch.orchestrate(&["resume", &run_id, "--state", state, "--format", "json"]);
    resumed.expect_code(0);
    assert!(statuses(&resumed.json()).values().all(|s| s == "succeeded"));
    assert_eq!(
        log_of(&scratch, "h01"),
        ["look", "remove-kesl", "install", "verify"],
        "untouched"
    );
    assert_eq!(
        log_of(&scratch, "h03"),
        [
            "look",
            "remove-kesl",
            "install",
            "restore",
            "look",
            "remove-kesl",
            "install",
            "verify"
        ]
    );
    assert_eq!(
        log_of(&scratch, "h05"),
        ["look", "remove-kesl", "install", "verify"]
    );
}

fn resume_refuses_a_changed_playbook_unless_forced(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 2);
    scratch.write("playbook.yml", &playbook("0", "; exit 1"));
    scratch
        .orchestrate(&[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--state",
            state,
        ])
        .expect_code(1);
    let run_id = only_run_id(&scratch, state);
    scratch.write("playbook.yml", &playbook("0", ""));
    let refused = scratch.orchestrate(&["resume", &run_id, "--state", state]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("the playbook") && refused.stderr.contains("changed since run"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(log_of(&scratch, "h02"), Vec::<String>::new(), "nothing ran");

    let forced = scratch.orchestrate(&["resume", &run_id, "--state", state, "--force"]);
    forced.expect_code(0);
    assert!(
        forced.stderr.contains("warning: the playbook"),
        "{}",
        forced.stderr
    );
}

fn the_journal_holds_no_secret_and_lists_runs_newest_first(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 1);
    scratch.write(
        "playbook.yml",
        "name: s\nphases:\n  - name: p\n    steps:\n      - sh: echo password={{ secret(name=\"JOURNAL_TEST_PW\") }}\n",
    );
    for _ in 0..2 {
        scratch
            .orchestrate_env(
                &[
                    "run",
                    "playbook.yml",
                    "-i",
                    "inventory.yml",
                    "--state",
                    state,
                ],
                &[("JOURNAL_TEST_PW", "hunter2-journal")],
            )
            .expect_code(0);
    }
    let contents = journal.contents(&scratch);
    assert!(contents.contains("password=***"), "the step is journaled");
    assert!(!contents.contains("hunter2-journal"));
    let runs = scratch
        .orchestrate(&["status", "--state", state, "--format", "json"])
        .expect_code(0)
        .json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs[0]["started_at"].as_str() >= runs[1]["started_at"].as_str(),
        "newest first"
    );
    for key in ["run_id", "playbook", "status", "started_at", "finished_at"] {
        assert!(runs[0].get(key).is_some(), "{key}");
    }
    let human = scratch.orchestrate(&["status", "--state", state]);
    human.expect_code(0);
    assert!(human.stdout.contains(runs[0]["run_id"].as_str().unwrap()));
    let report = scratch.orchestrate(&[
        "report",
        runs[0]["run_id"].as_str().unwrap(),
        "--format",
        "json",
        "--state",
        state,
    ]);
    report.expect_code(0);
    assert!(report.stdout.contains("password=***"), "{}", report.stdout);
}

fn status_and_report_explain_a_missing_journal_or_run(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    if journal.is_sqlite() {
        let run = scratch.orchestrate(&["status"]);
        run.expect_code(2);
        assert!(run.stderr.contains("no journal here"), "{}", run.stderr);
    }
    fleet(&scratch, 1);
    scratch.write("playbook.yml", &playbook("0", ""));
    scratch
        .orchestrate(&[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--state",
            state,
        ])
        .expect_code(0);
    let run = scratch.orchestrate(&["report", "nope", "--format", "json", "--state", state]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("no run nope; `orchestrate status` lists the runs"),
        "{}",
        run.stderr
    );
}

fn report_renders_a_journaled_run_as_html_and_junit_files(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 3);
    // Host 2 fails at install and is rolled back.
    scratch.write("playbook.yml", &playbook("0", "; [ {{ n }} != 2 ]"));
    scratch
        .orchestrate(&[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--state",
            state,
            "--yes",
        ])
        .expect_code(1);
    let run_id = only_run_id(&scratch, state);

    scratch
        .orchestrate(&[
            "report",
            &run_id,
            "--format",
            "html",
            "-o",
            "report.html",
            "--state",
            state,
        ])
        .expect_code(0);
    let html = std::fs::read_to_string(scratch.path().join("report.html")).unwrap();
    for expected in [
        run_id.as_str(),
        "acme",
        "h02",
        "install",
        "restore",
        "verify",
    ] {
        assert!(html.contains(expected), "{expected} in the page");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    scratch
        .orchestrate(&[
            "report",
            &run_id,
            "--format",
            "junit",
            "-o",
            "report.xml",
            "--state",
            state,
        ])
        .expect_code(0);
    let xml = std::fs::read_to_string(scratch.path().join("report.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("acme"));
    assert_eq!(suite.attribute("tests"), Some("3"));
    assert_eq!(suite.attribute("failures"), Some("1"));
    let failed = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .find(|n| n.children().any(|c| c.has_tag_name("failure")))
        .unwrap();
    assert_eq!(failed.attribute("name"), Some("h02"));
}

fn a_second_ctrl_c_stops_at_once_and_the_run_can_still_be_resumed(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 3);
    scratch.write("playbook.yml", &playbook("30", ""));
    let mut child = scratch.spawn(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        state,
    ]);
    wait_for("the canary to be in its long step", || {
        hosts_running_remove(&scratch, 3) >= 1
    });
    let started = Instant::now();
    ctrl_c(&child);
    std::thread::sleep(Duration::from_millis(300));
    ctrl_c(&child);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the 30 s step"
    );
    let run_id = only_run_id(&scratch, state);
    let status = scratch.orchestrate(&["status", &run_id, "--state", state, "--format", "json"]);
    assert_eq!(status.json()["status"], "interrupted");
    let report = scratch
        .orchestrate(&["report", &run_id, "--format", "json", "--state", state])
        .json();
    let canary = &report["clients"][0]["hosts"][0];
    assert!(
        canary["error"]
            .as_str()
            .unwrap()
            .contains("its state is unknown; resume the run"),
        "{canary}"
    );

    // The canary was stopped in the middle of `remove`: resume runs it again
    // (its outcome was never recorded), after a fresh precheck.
    scratch.write("playbook.yml", &playbook("0", ""));
    let resumed = scratch.orchestrate(&[
        "resume", &run_id, "--state", state, "--force", "--format", "json",
    ]);
    resumed.expect_code(0);
    assert!(statuses(&resumed.json()).values().all(|s| s == "succeeded"));
    assert_eq!(
        log_of(&scratch, "h01"),
        ["look", "look", "remove-kesl", "install", "verify"]
    );
}

/// A fleet whose "old product" is a file in each host's folder: uninstall
/// removes it (rollback puts it back), install captures a version, a slow
/// step gives time to kill the controller, and verify reads the capture.
fn product_playbook(verify_fails: bool) -> String {
    format!(
        r#"name: product
waves: ["100%"]
failure_budget: "100%"
phases:
  - name: precheck
    steps:
      - name: find the old product
        check_safe: true
        sh: cat {{{{ dir }}}}/kaspersky 2>/dev/null || true
        capture: {{ as: old }}
  - name: uninstall
    steps:
      - name: remove it
        when: old | length > 0
        sh: rm {{{{ dir }}}}/kaspersky && echo removed >> {{{{ dir }}}}/log
        marks: protection_off
        rollback:
          - sh: echo {{{{ old | sh_quote }}}} > {{{{ dir }}}}/kaspersky && echo restored >> {{{{ dir }}}}/log
  - name: install
    steps:
      - name: install the new one
        sh: echo 4.18 && echo installed >> {{{{ dir }}}}/log
        capture: {{ as: version }}
      - name: settle
        sh: touch {{{{ dir }}}}/removing; sleep 1.5; echo settled >> {{{{ dir }}}}/log
  - name: verify
    steps:
      - name: verify
        sh: echo verified {{{{ version }}}} >> {{{{ dir }}}}/log{fail}
"#,
        fail = if verify_fails { "; exit 1" } else { "" }
    )
}

/// Runs `args` and kills the controller (SIGKILL) while the host is in
/// its slow step, then lets the orphaned step end, as it would on a real
/// endpoint.
fn kill_mid_settle(scratch: &Scratch, args: &[&str]) {
    let _ = std::fs::remove_file(scratch.path().join("hosts/h01/removing"));
    let mut child = scratch.spawn(args);
    wait_for("the slow step", || hosts_running_remove(scratch, 1) >= 1);
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1600));
}

fn a_value_captured_before_the_crash_is_there_after_resume(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 1);
    std::fs::write(scratch.path().join("hosts/h01/kaspersky"), "KES 12").unwrap();
    scratch.write("playbook.yml", &product_playbook(false));
    kill_mid_settle(
        &scratch,
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--state",
            state,
        ],
    );
    let run_id = only_run_id(&scratch, state);
    scratch
        .orchestrate(&["resume", &run_id, "--state", state])
        .expect_code(0);
    let log = log_of(&scratch, "h01");
    assert_eq!(log.last().unwrap(), "verified 4.18", "{log:?}");
    assert_eq!(
        log.iter().filter(|l| *l == "installed").count(),
        1,
        "{log:?}"
    );
}

fn a_host_resumed_twice_still_rolls_back_what_it_did_before_the_first_crash(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 1);
    let product = scratch.path().join("hosts/h01/kaspersky");
    std::fs::write(&product, "KES 12").unwrap();
    scratch.write("playbook.yml", &product_playbook(true));
    kill_mid_settle(
        &scratch,
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--state",
            state,
        ],
    ); // killed once, after `remove it`
    let run_id = only_run_id(&scratch, state);
    // Resumed and killed again in the same slow step.
    kill_mid_settle(&scratch, &["resume", &run_id, "--state", state]);
    // Resumed a second time: verify fails, and the rollback must still
    // restore the product removed before the first crash.
    let last = scratch.orchestrate(&["resume", &run_id, "--state", state, "--format", "json"]);
    last.expect_code(1);
    assert_eq!(statuses(&last.json())["h01"], "failed");
    assert_eq!(
        std::fs::read_to_string(&product).unwrap().trim(),
        "KES 12",
        "the old product is back"
    );
    assert!(log_of(&scratch, "h01").contains(&"restored".to_string()));
}

fn resume_leaves_a_host_whose_rollback_failed_for_a_person(journal: &Journal) {
    let scratch = journal.scratch();
    let state = journal.state();
    fleet(&scratch, 2);
    scratch.write(
        "playbook.yml",
        "name: x\nwaves: [\"100%\"]\nfailure_budget: \"100%\"\nphases:\n  - name: p\n    steps:\n      - name: change\n        sh: echo changed >> {{ dir }}/log; [ {{ n }} != 1 ]\n        rollback:\n          - sh: exit 9\n",
    );
    let first = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        state,
    ]);
    first.expect_code(3);
    let run_id = only_run_id(&scratch, state);
    let resumed = scratch.orchestrate(&["resume", &run_id, "--state", state, "--format", "json"]);
    resumed.expect_code(3);
    assert_eq!(statuses(&resumed.json())["h01"], "rollback_failed");
    assert_eq!(log_of(&scratch, "h01"), ["changed"], "not touched again");
    let status = scratch.orchestrate(&["status", &run_id, "--state", state]);
    assert!(
        status.stdout.contains("needs a person:") && status.stdout.contains("h01"),
        "{}",
        status.stdout
    );
}

crate::on_both_journals!(
    a_run_killed_mid_wave_resumes_without_repeating_a_completed_step,
    a_run_stopped_with_ctrl_c_resumes_to_the_end,
    a_halted_client_resumes_after_the_operator_fixes_the_cause,
    resume_refuses_a_changed_playbook_unless_forced,
    the_journal_holds_no_secret_and_lists_runs_newest_first,
    status_and_report_explain_a_missing_journal_or_run,
    report_renders_a_journaled_run_as_html_and_junit_files,
    a_second_ctrl_c_stops_at_once_and_the_run_can_still_be_resumed,
    a_value_captured_before_the_crash_is_there_after_resume,
    a_host_resumed_twice_still_rolls_back_what_it_did_before_the_first_crash,
    resume_leaves_a_host_whose_rollback_failed_for_a_person,
);
