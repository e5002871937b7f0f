//! Several controllers, one journal: `run --queue` records a run in
//! PostgreSQL and returns; `orchestrate worker`s take its clients one at a
//! time and run them as `run` would; `approve` answers confirmations; a
//! worker that dies is replaced, with resume semantics.
//!
//! Hosts are `local` hosts whose steps append their name to a log in the
//! host's own folder, so the tests count how often each step really ran.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{Scratch, exit_within, send, wait_for};
use crate::journals::Journal;
use serde_json::Value;

/// `clients`: (name, site, hosts). Host `NAME-hN` has folder `hosts/NAME-hN`.
fn inventory(scratch: &Scratch, clients: &[(&str, Option<&str>, usize)]) {
    let mut text = String::from("clients:\n");
    for (name, site, hosts) in clients {
        text.push_str(&format!("  {name}:\n"));
        if let Some(site) = site {
            text.push_str(&format!("    site: {site}\n"));
        }
        text.push_str("    hosts:\n");
        for i in 1..=*hosts {
            let host = format!("{name}-h{i}");
            let dir = scratch.path().join("hosts").join(&host);
            std::fs::create_dir_all(&dir).unwrap();
            text.push_str(&format!(
                "      - {{ name: {host}, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}' }} }}\n",
                dir.display()
            ));
        }
    }
    scratch.write("inventory.yml", &text);
}

/// Four steps, each logging its name once per execution; `remove` takes
/// `slow` seconds (room to kill a worker in the middle).
fn playbook(scratch: &Scratch, slow: &str, pause: &str) {
    scratch.write(
        "playbook.yml",
        &format!(
            r#"name: migration
waves: [1, "100%"]
pause_between_waves: {pause}
concurrency: 5
failure_budget: 0
phases:
  - name: precheck
    steps:
      - name: look
        sh: echo look >> {{{{ dir }}}}/log
  - name: uninstall
    steps:
      - name: remove
        sh: touch {{{{ dir }}}}/removing; sleep {slow}; echo remove >> {{{{ dir }}}}/log
        rollback:
          - sh: echo restore >> {{{{ dir }}}}/log
  - name: install
    steps:
      - name: install
        sh: echo install >> {{{{ dir }}}}/log
  - name: verify
    steps:
      - name: verify
        sh: echo verify >> {{{{ dir }}}}/log
"#
        ),
    );
}

fn log_of(scratch: &Scratch, host: &str) -> Vec<String> {
    std::fs::read_to_string(scratch.path().join("hosts").join(host).join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn removing(scratch: &Scratch, host: &str) -> bool {
    scratch
        .path()
        .join("hosts")
        .join(host)
        .join("removing")
        .exists()
}

const ALL_STEPS: [&str; 4] = ["look", "remove", "install", "verify"];

/// `run --queue`: returns at once with the run's id.
fn queue(scratch: &Scratch, journal: &Journal) -> String {
    let queued = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--state",
        journal.state(),
        "--queue",
    ]);
    queued.expect_code(0);
    let first = queued.stdout.lines().next().unwrap_or_default();
    let run_id = first
        .strip_prefix("run id: ")
        .and_then(|r| r.strip_suffix(" (queued)"))
        .unwrap_or_else(|| panic!("{}", queued.stdout));
    run_id.to_string()
}

/// `orchestrate worker ... --exit-when-idle`, its output in `name`.
fn worker(scratch: &Scratch, journal: &Journal, name: &str, site: Option<&str>) -> Child {
    let mut args = vec!["worker", "--state", journal.state(), "--exit-when-idle"];
    if let Some(site) = site {
        args.extend(["--site", site]);
    }
    let out = std::fs::File::create(scratch.path().join(name)).unwrap();
    scratch
        .command(&args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(
            std::fs::File::create(scratch.path().join(format!("{name}.err"))).unwrap(),
        ))
        .spawn()
        .expect("orchestrate worker starts")
}

#[track_caller]
fn finishes(child: &mut Child, scratch: &Scratch, name: &str) {
    let (code, _) = exit_within(child, Duration::from_secs(90));
    assert_eq!(
        code,
        Some(0),
        "{name}:\n{}\n{}",
        scratch.read(name),
        scratch.read(&format!("{name}.err"))
    );
}

fn status(scratch: &Scratch, journal: &Journal, run_id: &str) -> Value {
    scratch
        .orchestrate(&[
            "status",
            run_id,
            "--state",
            journal.state(),
            "--format",
            "json",
        ])
        .expect_code(0)
        .json()
}

fn client_statuses(status: &Value) -> BTreeMap<String, String> {
    status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Which clients a worker's output says it took.
fn taken_by(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("worker: took client "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn three_workers_finish_a_three_client_run_each_host_once() {
    let journal = Journal::postgres();
    let scratch = journal.scratch();
    let clients = [("alpha", None, 2), ("bravo", None, 2), ("charlie", None, 2)];
    inventory(&scratch, &clients);
    playbook(&scratch, "1", "0s");
    let run_id = queue(&scratch, &journal);
    // Recorded, not run: nothing touched yet, and the run is unfinished.
    assert!(log_of(&scratch, "alpha-h1").is_empty());
    let queued = status(&scratch, &journal, &run_id);
    assert_eq!(queued["status"], Value::Null);
    assert_eq!(queued["clients"].as_array().unwrap().len(), 3);

    let mut workers: Vec<Child> = (1..=3)
        .map(|i| worker(&scratch, &journal, &format!("w{i}.out"), None))
        .collect();
    // From another process, mid-run: every client, where it stands.
    wait_for("a host mid-way", || {
        removing(&scratch, "alpha-h1") || removing(&scratch, "bravo-h1")
    });
    let during = status(&scratch, &journal, &run_id);
    let names: Vec<&str> = during["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    let under_way = during["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["current_wave"] == 1)
        .count();
    assert!(
        under_way >= 1,
        "a client shows its first wave under way: {during}"
    );

    for (i, w) in workers.iter_mut().enumerate() {
        finishes(w, &scratch, &format!("w{}.out", i + 1));
    }
    let mut taken: Vec<String> = (1..=3)
        .flat_map(|i| taken_by(&scratch.read(&format!("w{i}.out"))))
        .collect();
    taken.sort();
    assert_eq!(
        taken,
        ["alpha", "bravo", "charlie"],
        "each client taken once"
    );
    for (client, _, hosts) in clients {
        for i in 1..=hosts {
            assert_eq!(
                log_of(&scratch, &format!("{client}-h{i}")),
                ALL_STEPS,
                "{client}-h{i}"
            );
        }
    }
    let done = status(&scratch, &journal, &run_id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        client_statuses(&done).values().all(|s| s == "succeeded"),
        "{done}"
    );
    for client in done["clients"].as_array().unwrap() {
        assert_eq!(client["current_wave"], 2, "{client}");
        assert_eq!(client["hosts"]["succeeded"], 2, "{client}");
    }
    let report = scratch
        .orchestrate(&[
            "report",
            &run_id,
            "--format",
            "json",
            "--state",
            journal.state(),
        ])
        .expect_code(0)
        .json();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["clients"].as_array().unwrap().len(), 3);
}

#[test]
fn a_worker_killed_mid_wave_is_replaced_and_no_completed_step_runs_again() {
    let journal = Journal::postgres();
    let scratch = journal.scratch();
    inventory(&scratch, &[("acme", None, 4)]);
    playbook(&scratch, "1", "0s");
    let run_id = queue(&scratch, &journal);
    let mut first = worker(&scratch, &journal, "first.out", None);
    // Wave 2 (h2..h4) is in its slow step: kill the worker outright.
    wait_for("wave 2 to be mid-way", || {
        (2..=4).all(|i| removing(&scratch, &format!("acme-h{i}")))
    });
    std::thread::sleep(Duration::from_millis(100));
    let completed: BTreeMap<String, Vec<String>> = (1..=4)
        .map(|i| format!("acme-h{i}"))
        .map(|h| (h.clone(), log_of(&scratch, &h)))
        .collect();
    first.kill().unwrap(); // SIGKILL: no handler, no goodbye, no release
    first.wait().unwrap();
    // Commands already running on the hosts go on without their worker.
    std::thread::sleep(Duration::from_millis(1200));

    let mut second = worker(&scratch, &journal, "second.out", None);
    finishes(&mut second, &scratch, "second.out");
    let said = scratch.read("second.out");
    assert!(said.contains("worker: took client acme of run"), "{said}");
    assert!(said.contains("over from orchestrate worker (pid"), "{said}");

    for (host, before) in &completed {
        let log = log_of(&scratch, host);
        for step in ["remove", "install", "verify"] {
            let runs = log.iter().filter(|l| *l == step).count();
            if before.iter().any(|l| l == step) {
                assert_eq!(
                    runs, 1,
                    "{host}: `{step}` had completed: not run again: {log:?}"
                );
            }
            assert!(runs >= 1, "{host}: `{step}` ran: {log:?}");
        }
        assert!(
            !log.contains(&"restore".to_string()),
            "{host}: never rolled back"
        );
    }
    assert_eq!(
        log_of(&scratch, "acme-h1"),
        ALL_STEPS,
        "the canary was done before the kill"
    );
    let done = status(&scratch, &journal, &run_id);
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[test]
fn a_client_pinned_to_a_site_is_taken_only_by_a_worker_of_that_site() {
    let journal = Journal::postgres();
    let scratch = journal.scratch();
    inventory(
        &scratch,
        &[("office", Some("acme-office"), 1), ("cloud", None, 1)],
    );
    playbook(&scratch, "0", "0s");
    let run_id = queue(&scratch, &journal);

    let mut anywhere = worker(&scratch, &journal, "anywhere.out", None);
    finishes(&mut anywhere, &scratch, "anywhere.out");
    assert_eq!(taken_by(&scratch.read("anywhere.out")), ["cloud"]);
    assert!(
        log_of(&scratch, "office-h1").is_empty(),
        "not this worker's site"
    );
    let mut elsewhere = worker(&scratch, &journal, "elsewhere.out", Some("other-site"));
    finishes(&mut elsewhere, &scratch, "elsewhere.out");
    assert!(taken_by(&scratch.read("elsewhere.out")).is_empty());
    let waiting = status(&scratch, &journal, &run_id);
    assert_eq!(waiting["status"], Value::Null, "the office is still to do");

    let mut office = worker(&scratch, &journal, "office.out", Some("acme-office"));
    finishes(&mut office, &scratch, "office.out");
    assert_eq!(taken_by(&scratch.read("office.out")), ["office"]);
    assert_eq!(log_of(&scratch, "office-h1"), ALL_STEPS);
    let done = status(&scratch, &journal, &run_id);
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[test]
fn a_wave_waits_for_approve_from_another_process() {
    let journal = Journal::postgres();
    let scratch = journal.scratch();
    inventory(&scratch, &[("acme", None, 2)]);
    playbook(&scratch, "0", "confirm");
    let run_id = queue(&scratch, &journal);
    let early = scratch.orchestrate(&["approve", &run_id, "acme", "--state", journal.state()]);
    early.expect_code(2);
    assert!(
        early.stderr.contains("is not waiting for a confirmation"),
        "{}",
        early.stderr
    );

    let mut w = worker(&scratch, &journal, "w.out", None);
    wait_for("the worker to ask", || {
        scratch
            .read("w.out")
            .contains("waits for `orchestrate approve")
    });
    assert_eq!(
        log_of(&scratch, "acme-h1"),
        ALL_STEPS,
        "the canary wave ran"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(log_of(&scratch, "acme-h2").is_empty(), "wave 2 waits");
    let approved = scratch.orchestrate(&["approve", &run_id, "acme", "--state", journal.state()]);
    approved.expect_code(0);
    assert!(
        approved.stdout.contains("approved wave 2 of client acme"),
        "{}",
        approved.stdout
    );
    finishes(&mut w, &scratch, "w.out");
    assert_eq!(log_of(&scratch, "acme-h2"), ALL_STEPS);
    assert_eq!(status(&scratch, &journal, &run_id)["status"], "succeeded");
}

#[test]
fn sigterm_stops_a_worker_as_ctrl_c_does_and_its_client_goes_back_to_the_queue() {
    let journal = Journal::postgres();
    let scratch = journal.scratch();
    inventory(&scratch, &[("acme", None, 1)]);
    playbook(&scratch, "2", "0s");
    let run_id = queue(&scratch, &journal);
    let mut first = worker(&scratch, &journal, "first.out", None);
    wait_for("the canary's slow step", || removing(&scratch, "acme-h1"));
    send(&first, libc::SIGTERM);
    let (code, _) = exit_within(&mut first, Duration::from_secs(60));
    let said = scratch.read("first.out");
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("goes back to the queue"), "{said}");
    // Stopped the soft way: the step ended, and the host was rolled back.
    assert_eq!(log_of(&scratch, "acme-h1"), ["look", "remove", "restore"]);

    let mut second = worker(&scratch, &journal, "second.out", None);
    finishes(&mut second, &scratch, "second.out");
    assert_eq!(taken_by(&scratch.read("second.out")), ["acme"]);
    assert_eq!(log_of(&scratch, "acme-h1")[3..], ALL_STEPS);
    assert_eq!(status(&scratch, &journal, &run_id)["status"], "succeeded");
}

#[test]
fn queue_needs_a_shared_journal() {
    let scratch = Scratch::new();
    inventory(&scratch, &[("acme", None, 1)]);
    playbook(&scratch, "0", "0s");
    let refused = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--queue"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--state postgres://"),
        "{}",
        refused.stderr
    );
    assert!(log_of(&scratch, "acme-h1").is_empty());
    let worker = scratch.orchestrate(&["worker", "--state", "state.db"]);
    worker.expect_code(2);
    assert!(
        worker.stderr.contains("need a journal they share"),
        "{}",
        worker.stderr
    );
}

#[test]
fn a_password_in_the_connection_string_is_never_shown() {
    let journal = Journal::postgres();
    let scratch = Scratch::new();
    inventory(&scratch, &[("acme", None, 1)]);
    playbook(&scratch, "0", "0s");
    let with_password =
        journal
            .state()
            .replacen("orchestrate@", "orchestrate:wrong-pw-hunter3@", 1);
    let run = scratch.orchestrate_env(
        &["run", "playbook.yml", "-i", "inventory.yml"],
        &[("ORCHESTRATE_STATE", &with_password)],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("orchestrate:***@127.0.0.1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter3") && !run.stdout.contains("hunter3"));
    assert!(log_of(&scratch, "acme-h1").is_empty(), "nothing ran");
    let help =
        scratch.orchestrate_env(&["run", "--help"], &[("ORCHESTRATE_STATE", &with_password)]);
    assert!(!help.stdout.contains("hunter3"), "{}", help.stdout);
}
