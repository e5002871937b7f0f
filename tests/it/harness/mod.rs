//! What the integration tests share: running the `orchestrate` binary in a
//! scratch folder holding the playbooks and inventories a test writes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch folder, removed when the test ends.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
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
        Run::new(orchestrate_in(self.path(), args, &[]))
    }

    /// `orchestrate ARGS...` started in the background in this folder
    /// (output discarded), for tests that interrupt or kill it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_orchestrate"))
            .args(args)
            .current_dir(self.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
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

    pub fn orchestrate_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::new(orchestrate_in(self.path(), args, env))
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

/// Presses Ctrl-C in a running `orchestrate`.
pub fn ctrl_c(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid touches no memory of ours.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
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
