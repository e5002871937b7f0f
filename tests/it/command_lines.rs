//! Secrets never on a command line: every process's arguments are readable
//! by every user of the machine (`/proc/PID/cmdline`, `ps`), so a run over
//! local hosts and over real sshd (whose endpoint processes run on this
//! machine too) is watched by a sampler that reads every process's command
//! line many times a second, and no form of a secret may show up there.
//! Also: the local transport's temporary files are not where another user
//! could plant a symlink.

use crate::harness;
use crate::support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use harness::Scratch;
use support::sshd::SshdEnv;

/// Reads every `/proc/*/cmdline` every 20 ms on a thread of its own until
/// [`CmdlineSampler::finish`], keeping each distinct command line seen
/// (arguments joined by spaces).
pub struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeSet<String>>>,
}

impl CmdlineSampler {
    pub fn start() -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(entries) = std::fs::read_dir("/proc") {
                    for entry in entries.flatten() {
                        let is_pid = entry
                            .file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit());
                        if !is_pid {
                            continue;
                        }
                        if let Ok(raw) = std::fs::read(entry.path().join("cmdline"))
                            && !raw.is_empty()
                        {
                            let line: Vec<u8> =
                                raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                            seen.insert(String::from_utf8_lossy(&line).trim_end().to_string());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        CmdlineSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; every distinct command line seen.
    pub fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("once")
            .join()
            .expect("the sampler ran")
    }
}

impl Drop for CmdlineSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Panics if `secret` is in any of `lines`: as it is, or inside anything
/// that decodes as base64 (to UTF-8 or to UTF-16LE, as `-EncodedCommand`
/// carries PowerShell).
pub fn assert_never_on_a_command_line(lines: &BTreeSet<String>, secret: &str) {
    let utf16: Vec<u8> = secret.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    for line in lines {
        assert!(
            !line.contains(secret),
            "the secret on a command line: {line}"
        );
        for word in line.split([' ', '\'', '"']) {
            let Ok(decoded) = engine.decode(word.trim()) else {
                continue;
            };
            let holds = |needle: &[u8]| decoded.windows(needle.len()).any(|w| w == needle);
            assert!(
                !holds(secret.as_bytes()) && !holds(&utf16),
                "the secret base64-encoded on a command line: {line}"
            );
        }
    }
}

const SECRET: &str = "Sup3r-S3cret-Cmdline-42";

/// Each step holds the secret and lives long enough to be sampled.
const PLAYBOOK: &str = r#"name: secret in scripts
phases:
  - name: p
    steps:
      - name: uses the secret
        sh: |
          token='{{ secret(name="CMDLINE_TEST_SECRET") }}'
          sleep 0.4
          test -n "$token" && echo used
      - name: a second step
        run: "sleep 0.3; echo {{ secret(name=\"CMDLINE_TEST_SECRET\") }} | wc -c"
"#;

fn run_watched(scratch: &Scratch) -> (harness::Run, BTreeSet<String>) {
    scratch.write("playbook.yml", PLAYBOOK);
    let sampler = CmdlineSampler::start();
    let run = scratch.orchestrate_env(
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
        ],
        &[("CMDLINE_TEST_SECRET", SECRET)],
    );
    (run, sampler.finish())
}

#[test]
fn no_secret_on_any_command_line_over_local_hosts() {
    let scratch = Scratch::new();
    let mut inventory = String::from("clients:\n  acme:\n    hosts:\n");
    for i in 1..=3 {
        inventory.push_str(&format!(
            "      - {{ name: l{i}, address: 127.0.0.1, os: linux, transport: local }}\n"
        ));
    }
    scratch.write("inventory.yml", &inventory);
    let (run, seen) = run_watched(&scratch);
    run.expect_code(0);
    // The sampler saw the steps' shells (the reader), so it was watching.
    assert!(seen.iter().any(|l| l.contains("sleep 0.4")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("sh -c IFS= read")),
        "{seen:?}"
    );
    assert_never_on_a_command_line(&seen, SECRET);
}

#[test]
fn no_secret_on_any_command_line_over_ssh() {
    let env = SshdEnv::new();
    let server = env.server(2);
    let hosts = server.hosts();
    env.trust(&hosts);
    let scratch = Scratch::new();
    scratch.write(
        "inventory.yml",
        &crate::ssh_runs::inventory(&env, &hosts, &[]),
    );
    let (run, seen) = run_watched(&scratch);
    run.expect_code(0);
    // The endpoint's shells were seen: the reader, run by the test sshd's user.
    assert!(seen.iter().any(|l| l.contains("sleep 0.4")), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("/bin/sh -c IFS= read") && l.ends_with("-end")),
        "{seen:?}"
    );
    assert_never_on_a_command_line(&seen, SECRET);
}

/// The old temporary name was `$TMPDIR/orchestrate-PID-HOST-NAME`: anyone
/// could plant a symlink there, and root would write through it. Now a
/// `script` step's copy goes to a fresh 0700 directory, and the planted
/// link is left alone.
#[test]
fn a_planted_symlink_in_tmpdir_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let tmpdir = scratch.path().join("tmp");
    std::fs::create_dir(&tmpdir).unwrap();
    let victim = scratch.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: l1, address: 127.0.0.1, os: linux, transport: local }\n",
    );
    let out = scratch.path().join("out.txt");
    scratch.write(
        "step.sh",
        &format!(
            "#!/bin/sh\nls -ld \"$(dirname \"$0\")\" > '{}'\n",
            out.display()
        ),
    );
    std::fs::set_permissions(
        scratch.path().join("step.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    scratch.write(
        "playbook.yml",
        "name: script\nphases:\n  - name: p\n    steps:\n      - name: s\n        script: { src: step.sh }\n",
    );
    // Links at every name the old code would have chosen for the next pids.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in last..last + 300 {
        std::os::unix::fs::symlink(
            &victim,
            tmpdir.join(format!("orchestrate-{pid}-l1-step.sh")),
        )
        .unwrap();
    }
    let run = harness::Run::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrate"))
            .args([
                "run",
                "playbook.yml",
                "-i",
                "inventory.yml",
                "--format",
                "json",
            ])
            .current_dir(scratch.path())
            .env("TMPDIR", &tmpdir)
            .output()
            .unwrap(),
    );
    run.expect_code(0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let listed = std::fs::read_to_string(&out).unwrap();
    assert!(listed.starts_with("drwx------"), "{listed}");
    assert!(listed.contains(&tmpdir.display().to_string()), "{listed}");
    // The private directory went with the session.
    let left: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_type().unwrap().is_symlink())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
