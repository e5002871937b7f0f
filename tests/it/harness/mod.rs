//! What the integration tests share: running the `orchestrate` binary in a
//! scratch folder holding the playbooks and inventories a test writes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where a run keeps its journal by default, relative to a scratch folder
/// holding `inventory.yml`.
pub const JOURNAL: &str = ".orchestrate/state.db";

/// `orchestrate run` of the `playbook.yml` and `inventory.yml` a test
/// wrote, the report going to `report.json` (read it with
/// [`Scratch::report`]).
pub const RUN_REPORTING: &[&str] = &[
    "run",
    "playbook.yml",
    "-i",
    "inventory.yml",
    "--report-json",
    "report.json",
];

/// A scratch folder, removed when the test ends.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Environment every `orchestrate` started from here gets.
    env: std::sync::Mutex<Vec<(String, String)>>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary folder"),
            env: Default::default(),
        }
    }

    /// Sets `key` in the environment of every `orchestrate` started from
    /// this folder (a journal's password file, say).
    pub fn set_env(&self, key: &str, value: &str) {
        self.env
            .lock()
            .unwrap()
            .push((key.to_string(), value.to_string()));
    }

    fn env(&self) -> Vec<(String, String)> {
        self.env.lock().unwrap().clone()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` in the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `orchestrate ARGS...` run in this folder.
    pub fn orchestrate(&self, args: &[&str]) -> Run {
        self.orchestrate_env(args, &[])
    }

    /// `orchestrate ARGS...` started in the background in this folder
    /// (output discarded), for tests that interrupt or kill it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.spawn_with_stdout(args, Stdio::null())
    }

    /// Like [`Scratch::spawn`], standard output going to `stdout` (a pipe
    /// the test closes, `/dev/full`, a file it watches).
    pub fn spawn_with_stdout(&self, args: &[&str], stdout: Stdio) -> std::process::Child {
        self.command(args)
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("orchestrate starts")
    }

    /// The `--dry-run --format json` plan of `playbook` on `inventory`.
    pub fn plan_json(&self, playbook: &str, inventory: &str) -> serde_json::Value {
        self.orchestrate(&[
            "run",
            playbook,
            "-i",
            inventory,
            "--dry-run",
            "--format",
            "json",
        ])
        .expect_code(0)
        .json()
    }

    /// `orchestrate ARGS...` in this folder, not started yet, for a test
    /// that sets up more (its standard output, its umask).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
        command
            .args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .envs(self.env());
        command
    }

    /// Like [`Scratch::spawn`], standard output going to the file `name`
    /// in this folder, so the test can wait for a line: see [`Scratch::read`].
    pub fn spawn_logging(&self, args: &[&str], name: &str) -> std::process::Child {
        let file = std::fs::File::create(self.path().join(name)).unwrap();
        self.spawn_with_stdout(args, Stdio::from(file))
    }

    /// The `report.json` a run wrote (see [`RUN_REPORTING`]).
    #[track_caller]
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.read("report.json"))
            .unwrap_or_else(|e| panic!("report.json: {e}"))
    }

    /// The text of `name` in this folder; empty if it does not exist (yet).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// The runs in the journal beside the inventory, newest first, as
    /// `status --format json` lists them.
    pub fn journal_runs(&self) -> Vec<serde_json::Value> {
        let runs = self
            .orchestrate(&["status", "--state", JOURNAL, "--format", "json"])
            .expect_code(0)
            .json();
        runs.as_array().cloned().unwrap_or_default()
    }

    /// The id of the newest run in the journal beside the inventory.
    #[track_caller]
    pub fn newest_run_id(&self) -> String {
        let runs = self.journal_runs();
        let first = runs.first().expect("a run in the journal");
        first["run_id"].as_str().unwrap().to_string()
    }

    /// `orchestrate report RUN --format json` of the newest run.
    pub fn journaled_report(&self) -> serde_json::Value {
        let run_id = self.newest_run_id();
        self.orchestrate(&["report", &run_id, "--state", JOURNAL, "--format", "json"])
            .expect_code(0)
            .json()
    }

    /// Writes `inventory.yml`: client `acme` with `count` local hosts
    /// `h01`.., each with a folder of its own (its `dir` var, returned in
    /// order) where its steps leave their marks.
    pub fn local_fleet(&self, count: usize) -> Vec<PathBuf> {
        let mut text = String::from("clients:\n  acme:\n    hosts:\n");
        let dirs = (1..=count)
            .map(|i| {
                let name = format!("h{i:02}");
                let dir = self.path().join("hosts").join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                text.push_str(&format!(
                    "      - {{ name: {name}, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}' }} }}\n",
                    dir.display()
                ));
                dir
            })
            .collect();
        self.write("inventory.yml", &text);
        dirs
    }

    pub fn orchestrate_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        Run::new(command.output().expect("orchestrate runs"))
    }
}

/// The repository root, where the shipped playbooks and inventory live.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn orchestrate_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrate"));
    command.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("orchestrate runs")
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn new(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A standard output whose reader has already gone: every write to it
/// fails with EPIPE, as after `| head -1` has read its line.
pub fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors, which we then own.
    let (read, write) = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe(2)");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(read);
    Stdio::from(write)
}

/// Presses Ctrl-C in a running `orchestrate`.
pub fn ctrl_c(child: &std::process::Child) {
    send(child, libc::SIGINT);
}

/// Sends `signal` (`libc::SIGTERM`, `libc::SIGHUP`...) to a running
/// `orchestrate`, as `kill`, systemd or a dropped SSH session would.
pub fn send(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid touches no memory of ours.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Waits for `child` to exit, failing the test after `limit`; returns its
/// exit code and how long it took.
pub fn exit_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> (Option<i32>, std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orchestrate did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until `ready` holds, or fails the test after 30 s.
pub fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
