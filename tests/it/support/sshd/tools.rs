//! The OpenSSH command-line tools the harness drives: ssh-keygen, ssh-agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub fn run(command: &mut Command) {
    let out = command.output().expect("run a helper tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let _ = std::fs::remove_file(path);
    let mut command = Command::new("ssh-keygen");
    command.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "orchestrate-test",
        "-f",
    ]);
    command.arg(path);
    if kind == "rsa" {
        command.args(["-b", "2048"]);
    }
    run(&mut command);
}

pub fn read_pub(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).expect("read a .pub file");
    let mut fields = text.split_whitespace();
    format!("{} {}", fields.next().unwrap(), fields.next().unwrap())
}

/// A running `ssh-agent`.
pub struct Agent {
    pub socket: PathBuf,
    pub(super) child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
