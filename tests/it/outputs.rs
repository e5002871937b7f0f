//! What a run writes besides the endpoints: every output file is opened
//! before any host is touched (and a bad one stops everything, exit 2);
//! the journal, reports and logs are readable by their owner only, whatever
//! the umask; and a standard output that goes away (`| head -1`, a full
//! disk) neither kills the run nor changes its exit code.

use crate::harness;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use harness::{JOURNAL, Run, Scratch, wait_for};

/// Two local hosts of client `acme`; each host's step appends to its log.
fn fleet(scratch: &Scratch) {
    scratch.local_fleet(2);
    scratch.write(
        "playbook.yml",
        "name: touch\nphases:\n  - name: p\n    steps:\n      - name: mark\n        sh: echo ran >> {{ dir }}/log; touch {{ dir }}/../started; sleep 0.5\n",
    );
}

fn touched(scratch: &Scratch) -> Vec<String> {
    ["h01", "h02"]
        .into_iter()
        .filter(|h| scratch.path().join("hosts").join(h).join("log").exists())
        .map(String::from)
        .collect()
}

/// The runs the journal beside the inventory holds (none if it is missing).
fn runs_in_journal(scratch: &Scratch) -> usize {
    if !scratch.path().join(JOURNAL).exists() {
        return 0;
    }
    scratch.journal_runs().len()
}

#[test]
fn a_report_or_log_into_a_missing_folder_stops_the_run_before_anything_happens() {
    for (option, file) in [
        ("--report-json", "no-such-folder/report.json"),
        ("--log", "no-such-folder/events.jsonl"),
    ] {
        let scratch = Scratch::new();
        fleet(&scratch);
        let run =
            scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", option, file]);
        run.expect_code(2);
        assert!(
            run.stderr.contains(file),
            "{option}: the error names the file: {}",
            run.stderr
        );
        assert_eq!(
            touched(&scratch),
            Vec::<String>::new(),
            "{option}: no host touched"
        );
        assert_eq!(
            runs_in_journal(&scratch),
            0,
            "{option}: no run in the journal"
        );
    }
}

#[test]
fn report_into_a_file_that_cannot_be_written_is_exit_2_naming_it() {
    let scratch = Scratch::new();
    fleet(&scratch);
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(0);
    let run_id = scratch.newest_run_id();
    let run = scratch.orchestrate(&[
        "report",
        &run_id,
        "--state",
        JOURNAL,
        "--format",
        "html",
        "-o",
        "no-such-folder/report.html",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("no-such-folder/report.html"),
        "{}",
        run.stderr
    );
}

/// `orchestrate ARGS` under umask 022, the usual default.
fn under_umask_022(scratch: &Scratch, args: &[&str]) -> std::process::Command {
    let mut command = scratch.command(args);
    // SAFETY: umask(2) between fork and exec touches no shared state.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    command
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_journal_reports_and_logs_are_for_their_owner_only_under_umask_022() {
    let scratch = Scratch::new();
    fleet(&scratch);
    let mut child = under_umask_022(
        &scratch,
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
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // While the run holds the journal open, its WAL and shared memory
    // exist beside it: they hold the same endpoint output.
    let state = scratch.path().join(".orchestrate");
    wait_for("the journal's WAL", || {
        state.join("state.db-wal").exists() && scratch.path().join("hosts/started").exists()
    });
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&state), 0o700, ".orchestrate/");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    for file in ["report.json", "events.jsonl"] {
        assert_eq!(mode(&scratch.path().join(file)), 0o600, "{file}");
    }

    let run_id = scratch.newest_run_id();
    for format in ["html", "json", "junit"] {
        let out = format!("report.{format}");
        let output = under_umask_022(
            &scratch,
            &[
                "report", &run_id, "--state", JOURNAL, "--format", format, "-o", &out,
            ],
        )
        .output()
        .unwrap();
        Run::new(output).expect_code(0);
        assert_eq!(mode(&scratch.path().join(&out)), 0o600, "report -o {out}");
    }
}

/// Runs `orchestrate ARGS` with standard output going to `stdout`.
fn with_stdout(scratch: &Scratch, args: &[&str], stdout: Stdio) -> Run {
    Run::new(scratch.command(args).stdout(stdout).output().unwrap())
}

#[test]
fn a_run_whose_reader_has_gone_runs_every_host_to_the_end_and_keeps_its_exit_code() {
    let scratch = Scratch::new();
    fleet(&scratch);
    let run = with_stdout(
        &scratch,
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
        ],
        harness::closed_pipe(),
    );
    run.expect_code(0);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(touched(&scratch), ["h01", "h02"]);
    let report: serde_json::Value = serde_json::from_str(&scratch.read("report.json")).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(
        scratch.journal_runs()[0]["status"],
        "succeeded",
        "the journal is complete"
    );
}

#[test]
fn status_whose_reader_has_gone_exits_0_without_a_panic() {
    let scratch = Scratch::new();
    fleet(&scratch);
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(0);
    for format in ["human", "json"] {
        let run = with_stdout(
            &scratch,
            &["status", "--state", JOURNAL, "--format", format],
            harness::closed_pipe(),
        );
        run.expect_code(0);
        assert_eq!(run.stderr, "", "a reader that left is no news");
    }
}

#[test]
fn a_dry_run_into_a_full_disk_says_so_once_and_keeps_its_exit_code() {
    let scratch = Scratch::new();
    fleet(&scratch);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let run = with_stdout(
        &scratch,
        &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"],
        Stdio::from(full),
    );
    run.expect_code(0);
    assert_eq!(
        run.stderr
            .matches("cannot write to standard output")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
