//! One process at a time per host: a second `run` or `resume` that would
//! touch hosts a live process works on is refused (exit 2, naming that
//! process), and a lease left by a killed process is taken over.
//!
//! The hosts are `local` hosts whose one step marks that it started, takes
//! a moment, and logs `ran` once per execution, so the tests count how
//! often each host really ran.

use crate::harness::{self, Scratch, ctrl_c, wait_for};

const STATE: &str = ".orchestrate/state.db";
const HOSTS: usize = 4;

fn setup(waves: &str) -> Scratch {
    let scratch = Scratch::new();
    let mut inventory = String::from("clients:\n  acme:\n    hosts:\n");
    for i in 1..=HOSTS {
        let dir = scratch.path().join(format!("h{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        inventory.push_str(&format!(
            "      - {{ name: h{i}, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}' }} }}\n",
            dir.display()
        ));
    }
    scratch.write("inventory.yml", &inventory);
    scratch.write(
        "playbook.yml",
        &format!(
            r#"name: lease
waves: {waves}
concurrency: {HOSTS}
failure_budget: 0
phases:
  - name: uninstall
    steps:
      - name: remove
        sh: touch {{{{ dir }}}}/started; sleep 1; echo ran >> {{{{ dir }}}}/log
"#
        ),
    );
    scratch
}

fn started(scratch: &Scratch, host: usize) -> bool {
    scratch.path().join(format!("h{host}/started")).exists()
}

/// How many times each host's step ran to its end.
fn executions(scratch: &Scratch) -> Vec<usize> {
    (1..=HOSTS)
        .map(|i| {
            std::fs::read_to_string(scratch.path().join(format!("h{i}/log")))
                .unwrap_or_default()
                .lines()
                .filter(|l| *l == "ran")
                .count()
        })
        .collect()
}

fn run_ids(scratch: &Scratch) -> Vec<String> {
    let runs = scratch
        .orchestrate(&["status", "--state", STATE, "--format", "json"])
        .expect_code(0)
        .json();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

/// The refusal names the live process: its pid, its machine, since when.
#[track_caller]
fn assert_refused_by(refused: &harness::Run, pid: u32) {
    refused.expect_code(2);
    let machine = orchestrate::journal::lease::machine_name();
    let said = &refused.stderr;
    assert!(said.contains("is being worked on by orchestrate"), "{said}");
    assert!(
        said.contains(&format!("pid {pid} on {machine}, since 20")),
        "{said}"
    );
    assert!(said.contains("nothing was started"), "{said}");
}

#[test]
fn a_second_run_on_the_same_hosts_is_refused_while_the_first_works() {
    let scratch = setup(r#"["100%"]"#);
    let mut first = scratch.spawn(&["run", "playbook.yml", "-i", "inventory.yml"]);
    wait_for("the first run to start a host", || started(&scratch, 1));
    let second = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    assert_refused_by(&second, first.id());
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(executions(&scratch), vec![1; HOSTS], "each host ran once");
    assert_eq!(
        run_ids(&scratch).len(),
        1,
        "the refused run left no run behind"
    );
    // Once the first has ended, its leases are gone.
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(0);
    assert_eq!(executions(&scratch), vec![2; HOSTS]);
}

#[test]
fn a_second_resume_of_the_same_run_is_refused_while_the_first_works() {
    // The canary runs alone; Ctrl-C during it leaves the other hosts unstarted.
    let scratch = setup(r#"[1, "100%"]"#);
    let mut run = scratch.spawn(&["run", "playbook.yml", "-i", "inventory.yml"]);
    wait_for("the canary to start", || started(&scratch, 1));
    ctrl_c(&run);
    assert_eq!(run.wait().unwrap().code(), Some(130));
    assert_eq!(executions(&scratch), vec![1, 0, 0, 0]);
    let run_id = run_ids(&scratch).remove(0);

    let mut first = scratch.spawn(&["resume", &run_id, "--state", STATE]);
    wait_for("the first resume to start a host", || started(&scratch, 2));
    let second = scratch.orchestrate(&["resume", &run_id, "--state", STATE]);
    assert_refused_by(&second, first.id());
    assert!(
        second.stderr.contains(&format!("resume of run {run_id}")),
        "{}",
        second.stderr
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(executions(&scratch), vec![1; HOSTS], "each host ran once");
}

#[test]
fn a_lease_left_by_a_killed_run_is_taken_over_with_a_warning() {
    let scratch = setup(r#"["100%"]"#);
    let mut killed = scratch.spawn(&["run", "playbook.yml", "-i", "inventory.yml"]);
    wait_for("the run to start its hosts", || {
        (1..=HOSTS).all(|i| started(&scratch, i))
    });
    killed.kill().unwrap(); // SIGKILL: its leases stay in the journal
    killed.wait().unwrap();
    // Let the orphaned steps end, as they would on real endpoints.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let run_id = run_ids(&scratch).remove(0);
    let resumed = scratch.orchestrate(&["resume", &run_id, "--state", STATE]);
    resumed.expect_code(0);
    let warning = format!("pid {} on ", killed.id());
    assert!(
        resumed
            .stderr
            .contains("warning: host h1 was left leased by orchestrate run")
            && resumed.stderr.contains(&warning)
            && resumed.stderr.contains("which is gone; taking it over"),
        "{}",
        resumed.stderr
    );
}
