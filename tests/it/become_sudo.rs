//! `become`: steps that run as root through the real `sudo` of this
//! machine, logged in over real sshd as an unprivileged user (the users and
//! sudoers rules come from scripts/deps/sudo.sh): who each step runs as,
//! uploads owned by root, rollback with become, and the ways sudo says no
//! (wrong password, no rights, `requiretty`), each failing fast with
//! nothing after it run, and the password nowhere to be found.

use crate::command_lines::assert_never_on_a_command_line;
use crate::harness;
use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::Scratch;
use support::sshd::{Sshd, SshdEnv};

/// One host `h01` reached as `env`'s user, with `become` settings.
fn become_fleet(scratch: &Scratch, env: &SshdEnv, become_line: &str) -> Sshd {
    let server = env.server(1);
    let hosts = server.hosts();
    env.trust(&hosts);
    let mut inventory = crate::ssh_runs::inventory(env, &hosts, &[]);
    inventory = inventory.replacen(
        "defaults:\n",
        &format!("defaults:\n  become: {become_line}\n"),
        1,
    );
    scratch.write("inventory.yml", &inventory);
    server
}

/// A folder both the login user and root can write, for steps to leave
/// evidence in.
fn evidence(scratch: &Scratch) -> PathBuf {
    let dir = scratch.path().join("evidence");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The scratch folder itself must be reachable by the login user.
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn uid_of(user: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run_with_password(
    scratch: &Scratch,
    password: &str,
) -> (harness::Run, std::collections::BTreeSet<String>) {
    crate::command_lines::run_sampled(scratch, &[("BECOME_TEST_PW", password)])
}

/// Every file the run left, as text: output, report, log and journal.
fn artefacts(scratch: &Scratch, run: &harness::Run) -> Vec<(String, String)> {
    let mut all = vec![
        ("stdout".to_string(), run.stdout.clone()),
        ("stderr".to_string(), run.stderr.clone()),
    ];
    let mut stack = vec![scratch.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                all.push((
                    path.display().to_string(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
    }
    all
}

#[test]
fn become_steps_run_as_root_uploads_land_owned_by_root_and_rollback_becomes_too() {
    let env = SshdEnv::new();
    let password = env
        .password()
        .expect("the test user's password (run as root)");
    let scratch = Scratch::new();
    let _server = become_fleet(
        &scratch,
        &env,
        "{ method: sudo, password_secret: BECOME_TEST_PW }",
    );
    let dir = evidence(&scratch);
    scratch.write("files/app.conf", "setting = 1\n");
    std::fs::set_permissions(
        scratch.path().join("files"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    scratch.write(
        "playbook.yml",
        &format!(
            r#"name: become
become: true
phases:
  - name: install
    steps:
      - name: as root
        sh: id -u > {d}/root.txt
        rollback:
          - name: undo as root
            sh: id -u > {d}/rollback.txt
      - name: as the login user
        become: false
        sh: id -u > {d}/login.txt
      - name: config
        upload: {{ src: files/app.conf, dest: {d}/app.conf, mode: "0640" }}
  - name: verify
    become: false
    steps:
      - name: fails
        sh: exit 3
"#,
            d = dir.display()
        ),
    );
    let (run, seen) = run_with_password(&scratch, &password);
    run.expect_code(1);
    assert_eq!(read(&dir.join("root.txt")), "0\n");
    assert_eq!(std::fs::metadata(dir.join("root.txt")).unwrap().uid(), 0);
    assert_eq!(
        read(&dir.join("login.txt")),
        format!("{}\n", uid_of(env.user()))
    );
    let uploaded = std::fs::metadata(dir.join("app.conf")).unwrap();
    assert_eq!((uploaded.uid(), uploaded.mode() & 0o777), (0, 0o640));
    assert_eq!(read(&dir.join("app.conf")), "setting = 1\n");
    // The failure in `verify` rolled `as root` back, as root.
    assert_eq!(read(&dir.join("rollback.txt")), "0\n");
    for (name, text) in artefacts(&scratch, &run) {
        assert!(!text.contains(&password), "the sudo password in {name}");
    }
    assert!(seen.iter().any(|l| l.starts_with("sudo -S -p")), "{seen:?}");
    assert_never_on_a_command_line(&seen, &password);
}

/// Runs a playbook whose second step becomes root and whose third leaves a
/// file; returns the run, the report, and whether the third step ran.
fn refused(
    env: &SshdEnv,
    become_line: &str,
    password: &str,
) -> (harness::Run, String, bool, Duration) {
    let scratch = Scratch::new();
    let _server = become_fleet(&scratch, env, become_line);
    let dir = evidence(&scratch);
    scratch.write(
        "playbook.yml",
        &format!(
            r#"name: refused
phases:
  - name: p
    steps:
      - name: look
        sh: "true"
      - name: as root
        become: true
        sh: touch {d}/became
      - name: after
        sh: touch {d}/after
"#,
            d = dir.display()
        ),
    );
    let started = Instant::now();
    let (run, seen) = run_with_password(&scratch, password);
    let took = started.elapsed();
    assert_never_on_a_command_line(&seen, password);
    for (name, text) in artefacts(&scratch, &run) {
        assert!(!text.contains(password), "the sudo password in {name}");
    }
    assert!(!dir.join("became").exists());
    let report = read(&scratch.path().join("report.json"));
    (run, report, dir.join("after").exists(), took)
}

#[test]
fn a_wrong_password_fails_the_host_at_that_step_quickly() {
    let env = SshdEnv::new();
    let (run, report, after, took) = refused(
        &env,
        "{ password_secret: BECOME_TEST_PW }",
        "not-the-password-7Q",
    );
    run.expect_code(1);
    let message = format!("sudo refused the password for {} on h01", env.user());
    assert!(report.contains(&message), "{report}");
    assert!(
        run.stdout.contains(&message) || run.stderr.contains(&message),
        "{}",
        run.stdout
    );
    assert!(!after, "a step after the refusal ran");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_user_without_sudo_rights_fails_clearly() {
    let env = SshdEnv::as_user("orchestrate-nosudo");
    let password = env.password().expect("the user's password (run as root)");
    let (run, report, after, took) =
        refused(&env, "{ password_secret: BECOME_TEST_PW }", &password);
    run.expect_code(1);
    assert!(
        report.contains("orchestrate-nosudo on h01 may not use sudo to run commands as root"),
        "{report}"
    );
    assert!(!after);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn requiretty_is_named_with_the_fix() {
    let env = SshdEnv::as_user("orchestrate-tty");
    let (run, report, after, took) = refused(&env, "{ user: root }", "unused-password-Z9");
    run.expect_code(1);
    assert!(report.contains("requires a terminal"), "{report}");
    assert!(
        report.contains("Defaults:orchestrate-tty !requiretty"),
        "{report}"
    );
    assert!(!after);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_password_prompt_without_a_password_secret_is_an_error_not_a_hang() {
    let env = SshdEnv::new();
    let (run, report, after, took) = refused(&env, "{ user: root }", "unused-password-Y8");
    run.expect_code(1);
    assert!(
        report.contains("for a password and the inventory gives none"),
        "{report}"
    );
    assert!(!after);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// `become` to a user other than root, who cannot read the login user's
/// private copy of a script: a shell script's copy, its secret argument
/// set inside it, reaches that user on the become shell's standard input,
/// lands in a 0700 folder of that user's, runs as that user with the
/// right `$1`, and is removed (also after a timeout); no process's command
/// line ever holds the argument. A Perl script with a plain argument runs
/// as that user too (its copy is readable by all, its argument on its
/// command line, as for any user).
#[test]
fn become_another_user_gets_a_shell_script_with_its_args_inside_and_no_cmdline_holds_them() {
    const ARG: &str = "Bec0me-Arg-Secret-77";
    const BECOME_USER: &str = "orchestrate-nosudo";
    let env = SshdEnv::new();
    let password = env
        .password()
        .expect("the test user's password (run as root)");
    let scratch = Scratch::new();
    let _server = become_fleet(
        &scratch,
        &env,
        &format!("{{ method: sudo, user: {BECOME_USER}, password_secret: BECOME_TEST_PW }}"),
    );
    let dir = evidence(&scratch);
    let d = dir.display();
    scratch.write(
        "args.sh",
        &format!(
            "#!/bin/sh\nsleep 0.5\nid -un > {d}/who.txt\nls -ld \"$(dirname \"$0\")\" > {d}/folder.txt\n\
             test \"$#|$1|$2\" = '2|{ARG}|two words' && echo right > {d}/args.txt\nexit 4\n"
        ),
    );
    scratch.write(
        "slow.sh",
        &format!("#!/bin/sh\necho \"$0\" > {d}/slow.txt\nsleep 30\n"),
    );
    scratch.write(
        "tool.pl",
        &format!(
            "#!/usr/bin/perl\nopen(my $f, '>', '{d}/perl.txt') or die; \
             print $f scalar(getpwuid($<)) . \" $ARGV[0]\";\n"
        ),
    );
    scratch.write(
        "playbook.yml",
        r#"name: become another user
become: true
phases:
  - name: p
    steps:
      - name: shell script
        script:
          src: args.sh
          args: ['{{ secret(name="ARG_SECRET") }}', "two words"]
        ok_codes: [4]
      - name: perl script
        script: { src: tool.pl, args: [plain-arg] }
      - name: killed at its timeout
        script: { src: slow.sh, args: ['{{ secret(name="ARG_SECRET") }}'] }
        timeout: 2s
"#,
    );
    let (run, seen) = crate::command_lines::run_sampled(
        &scratch,
        &[("BECOME_TEST_PW", &password), ("ARG_SECRET", ARG)],
    );
    // The last step timed out, as it should.
    run.expect_code(1);
    let report = read(&scratch.path().join("report.json"));
    assert!(report.contains("\"status\": \"timed_out\""), "{report}");
    assert_eq!(read(&dir.join("who.txt")), format!("{BECOME_USER}\n"));
    assert_eq!(read(&dir.join("args.txt")), "right\n");
    let folder = read(&dir.join("folder.txt"));
    assert!(
        folder.starts_with("drwx------") && folder.contains(BECOME_USER),
        "{folder}"
    );
    assert_eq!(
        read(&dir.join("perl.txt")),
        format!("{BECOME_USER} plain-arg")
    );
    // Its copy ran under its own name, from a folder now gone, as is the
    // folder of the step killed at its timeout.
    assert!(
        seen.iter().any(|l| l.ends_with("-args.sh/args.sh")),
        "{seen:?}"
    );
    let slow = read(&dir.join("slow.txt"));
    let slow_folder = Path::new(slow.trim()).parent().unwrap();
    assert!(slow_folder.starts_with("/tmp"), "{slow}");
    harness::wait_for("the timed-out step's folder to go", || {
        !slow_folder.exists()
    });
    assert_never_on_a_command_line(&seen, ARG);
    assert_never_on_a_command_line(&seen, &password);
}
