//! Secrets never on a command line: every process's arguments are readable
//! by every user of the machine (`/proc/PID/cmdline`, `ps`), so a run over
//! local hosts and over real sshd (whose endpoint processes run on this
//! machine too) is watched by a sampler that reads every process's command
//! line many times a second, and no form of a secret may show up there:
//! not from a step's script, not from a `script` step's arguments. Over
//! WinRM, the endpoint's record of every command line is searched.
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

/// `orchestrate run playbook.yml -i inventory.yml --yes --report-json
/// report.json --log events.jsonl` in `scratch` with `env`, watched by a
/// [`CmdlineSampler`]: the run, and every command line seen while it lasted.
pub fn run_sampled(scratch: &Scratch, env: &[(&str, &str)]) -> (harness::Run, BTreeSet<String>) {
    let sampler = CmdlineSampler::start();
    let run = scratch.orchestrate_env(
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--yes",
            "--report-json",
            "report.json",
            "--log",
            "events.jsonl",
        ],
        env,
    );
    (run, sampler.finish())
}

/// An inventory of one local host, `l1`.
const ONE_LOCAL_HOST: &str = "clients:\n  acme:\n    hosts:\n      - { name: l1, address: 127.0.0.1, os: linux, transport: local }\n";

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
      - name: a script with the secret as its argument
        script:
          src: args.sh
          args: ['{{ secret(name="CMDLINE_TEST_SECRET") }}', "two words"]
"#;

/// The `script` step's script: it fails unless it got both arguments.
fn args_script() -> String {
    format!(
        "#!/bin/sh\nsleep 0.4\ntest \"$#|$1|$2\" = '2|{SECRET}|two words' || {{ echo \"got: $*\" >&2; exit 1; }}\n"
    )
}

fn run_watched(scratch: &Scratch) -> (harness::Run, BTreeSet<String>) {
    scratch.write("playbook.yml", PLAYBOOK);
    scratch.write("args.sh", &args_script());
    run_sampled(scratch, &[("CMDLINE_TEST_SECRET", SECRET)])
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
    // The script ran with its arguments inside its copy, none after it.
    assert!(seen.iter().any(|l| l.ends_with("-args.sh")), "{seen:?}");
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
    assert!(seen.iter().any(|l| l.ends_with("-args.sh")), "{seen:?}");
    assert_never_on_a_command_line(&seen, SECRET);
}

/// Over WinRM the script goes by Send to the stdin of a fixed command
/// line: the endpoint's log of what each command was started with (what a
/// Windows host's process list and process-creation events would show)
/// never holds the secret, for `powershell` and `cmd` steps and a `script`
/// step's arguments, while the scripts that came by Send do.
#[test]
fn no_secret_on_any_endpoint_command_line_over_winrm() {
    use crate::windows_fleet::{Fleet, WINRM_PASSWORD, entry};
    let fleet = Fleet::start(
        &["w1"],
        &[
            entry("step", "^\\$token = ", "used\r\n", 0),
            entry("script", "^& '", "ran\r\n", 0),
        ],
    );
    fleet.inventory("acme", "[1]", "0", "{}");
    let scratch = &fleet.scratch;
    scratch.write("step.ps1", "param($Token)\nWrite-Output $Token.Length\n");
    scratch.write(
        "playbook.yml",
        r#"name: secret in Windows steps
phases:
  - name: p
    steps:
      - name: powershell
        powershell: |
          $token = '{{ secret(name="CMDLINE_TEST_SECRET") }}'
          Write-Output used
      - name: cmd
        cmd: echo {{ secret(name="CMDLINE_TEST_SECRET") }} > NUL
      - name: script
        script: { src: step.ps1, args: ['{{ secret(name="CMDLINE_TEST_SECRET") }}'] }
"#,
    );
    let run = scratch.orchestrate_env(
        &["run", "playbook.yml", "-i", "inventory.yml", "--yes"],
        &[
            ("WINRM_PASSWORD", WINRM_PASSWORD),
            ("CMDLINE_TEST_SECRET", SECRET),
        ],
    );
    run.expect_code(0);
    let received = fleet.received();
    let kinds: Vec<&str> = received.iter().map(|r| r.kind.as_str()).collect();
    // Each step's script reached the host, the secret in it, by Send.
    for kind in ["powershell", "cmd"] {
        assert!(
            received
                .iter()
                .any(|r| r.kind == kind && r.script.contains(SECRET)),
            "{kind}: {kinds:?}"
        );
    }
    assert!(
        received
            .iter()
            .any(|r| r.script.starts_with("& '") && r.script.contains(SECRET)),
        "{received:?}"
    );
    let lines: BTreeSet<String> = received.iter().map(|r| r.command_line.clone()).collect();
    assert!(lines.iter().all(|l| !l.is_empty()), "{lines:?}");
    assert_never_on_a_command_line(&lines, SECRET);
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
    scratch.write("inventory.yml", ONE_LOCAL_HOST);
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

/// A Perl script's (or Python's, or a binary's) arguments can only be its
/// process arguments, which every user of the endpoint can read: a secret
/// among them is refused at plan time by `validate`, `--dry-run` and
/// `run`, before any host is touched, with the step, the host and what to
/// do instead; also when the argument is rendered only at run time. A
/// non-secret argument is fine, and so is a secret given to a shell script.
#[test]
fn a_secret_argument_of_a_script_that_is_no_shell_script_is_refused_before_any_host() {
    let scratch = Scratch::new();
    scratch.write("inventory.yml", ONE_LOCAL_HOST);
    let out = scratch.path().join("out.txt");
    scratch.write(
        "tool.pl",
        &format!(
            "#!/usr/bin/perl\nopen(my $f, '>', '{}') or die; print $f \"perl got $ARGV[0]\";\n",
            out.display()
        ),
    );
    scratch.write(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\ntest \"$1\" = '{SECRET}' && echo wrapper got it > '{}'\n",
            out.display()
        ),
    );
    let touched = scratch.path().join("touched");
    let playbook = |src: &str, arg: &str| {
        format!(
            "name: args\nphases:\n  - name: p\n    steps:\n      - name: first\n        sh: touch '{}'\n      - name: who\n        sh: echo me\n        capture: {{ as: who }}\n      - name: pass the token\n        script:\n          src: {src}\n          args:\n            - {arg}\n",
            touched.display()
        )
    };
    let env = [("CMDLINE_TEST_SECRET", SECRET)];
    let plain = r#"'{{ secret(name="CMDLINE_TEST_SECRET") }}'"#;
    let deferred = r#"'{{ who }}:{{ secret(name="CMDLINE_TEST_SECRET") }}'"#;
    for arg in [plain, deferred] {
        scratch.write("playbook.yml", &playbook("tool.pl", arg));
        for args in [
            &["validate", "playbook.yml", "-i", "inventory.yml"][..],
            &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"],
            &["run", "playbook.yml", "-i", "inventory.yml", "--yes"],
        ] {
            let run = scratch.orchestrate_env(args, &env);
            run.expect_code(2);
            for needed in [
                "playbook.yml:14:",
                "host l1, step `pass the token` (p): argument 1 of the script holds a secret",
                "tool.pl is not a shell script",
                "every user of the endpoint can read them",
                "wrap the program in a shell script",
                "`upload:`",
            ] {
                assert!(
                    run.stderr.contains(needed),
                    "{arg} {args:?}: {needed:?} in:\n{}",
                    run.stderr
                );
            }
            assert!(!run.stderr.contains(SECRET) && !run.stdout.contains(SECRET));
            assert!(!touched.exists(), "{args:?} touched the host");
        }
    }
    // Not a secret: allowed, on the command line as before.
    scratch.write("playbook.yml", &playbook("tool.pl", "plain-value"));
    let run = scratch.orchestrate_env(
        &["run", "playbook.yml", "-i", "inventory.yml", "--yes"],
        &env,
    );
    run.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "perl got plain-value"
    );
    // The same secret for a shell script goes inside its copy: it runs.
    std::fs::remove_file(&touched).unwrap();
    scratch.write("playbook.yml", &playbook("wrapper.sh", plain));
    scratch
        .orchestrate_env(&["validate", "playbook.yml", "-i", "inventory.yml"], &env)
        .expect_code(0);
    let (run, seen) = run_sampled(&scratch, &env);
    run.expect_code(0);
    assert!(touched.exists());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "wrapper got it\n");
    assert_never_on_a_command_line(&seen, SECRET);
}

/// The same refusal when even the script is known only at run time (its
/// `src` read from a captured value): the step fails before the script is
/// uploaded or started, and the secret is on no command line.
#[test]
fn a_secret_argument_of_a_script_chosen_at_run_time_is_refused_when_it_would_run() {
    let scratch = Scratch::new();
    scratch.write("inventory.yml", ONE_LOCAL_HOST);
    let ran = scratch.path().join("ran");
    scratch.write(
        "tool.pl",
        &format!("#!/usr/bin/perl\nopen(my $f, '>', '{}');\n", ran.display()),
    );
    scratch.write(
        "playbook.yml",
        r#"name: args
phases:
  - name: p
    steps:
      - name: choose
        sh: echo tool.pl
        capture: { as: which }
      - name: pass the token
        script:
          src: "{{ which }}"
          args: ['{{ secret(name="CMDLINE_TEST_SECRET") }}']
"#,
    );
    let env = [("CMDLINE_TEST_SECRET", SECRET)];
    scratch
        .orchestrate_env(&["validate", "playbook.yml", "-i", "inventory.yml"], &env)
        .expect_code(0);
    let (run, seen) = run_sampled(&scratch, &env);
    run.expect_code(1);
    let report = scratch.read("report.json");
    assert!(
        report.contains(
            "tool.pl is not a shell script, so its arguments would go on its command line"
        ),
        "{report}"
    );
    assert!(!ran.exists(), "the script ran");
    assert!(!report.contains(SECRET));
    assert_never_on_a_command_line(&seen, SECRET);
}
