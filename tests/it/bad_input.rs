//! Bad input: every mistake in a playbook or an inventory is an error that
//! names the file, the line and the column, shows the line with a caret
//! under the culprit, and exits with code 2. Never a panic.

use crate::harness;

use harness::Scratch;

const GOOD_PLAYBOOK: &str = r#"name: good
waves: [1, "100%"]
phases:
  - name: work
    steps:
      - name: say hello
        run: echo hello
"#;

const GOOD_INVENTORY: &str = r#"clients:
  acme:
    hosts:
      - { name: a1, address: 127.0.0.1, os: linux, transport: local }
      - { name: a2, address: 127.0.0.1, os: linux, transport: local }
      - { name: a3, address: 127.0.0.1, os: linux, transport: local }
"#;

enum Bad {
    Playbook(&'static str),
    Inventory(&'static str),
}

/// Checks that `bad` fails validation and a dry run with exit 2 and an
/// error at `file:line` saying `says`.
#[track_caller]
fn rejects(bad: Bad, line: usize, says: &str) {
    let scratch = Scratch::new();
    let (playbook, inventory, file) = match bad {
        Bad::Playbook(text) => (text, GOOD_INVENTORY, "playbook.yml"),
        Bad::Inventory(text) => (GOOD_PLAYBOOK, text, "inventory.yml"),
    };
    scratch.write("playbook.yml", playbook);
    scratch.write("inventory.yml", inventory);
    for args in [
        &["validate", "playbook.yml", "-i", "inventory.yml"][..],
        &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"][..],
    ] {
        let run = scratch.orchestrate(args);
        run.expect_code(2);
        let place = format!("{file}:{line}:");
        assert!(
            run.stderr.contains(&place),
            "{args:?}: expected an error at {place}, got:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(says),
            "{args:?}: expected {says:?} in:\n{}",
            run.stderr
        );
        let source_line = (if file == "playbook.yml" {
            playbook
        } else {
            inventory
        })
        .lines()
        .nth(line - 1)
        .unwrap()
        .trim();
        assert!(
            run.stderr.contains(source_line),
            "the offending line {source_line:?} is shown:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains('^'),
            "a caret points at it:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "nothing is planned: {}", run.stdout);
    }
}

#[test]
fn malformed_yaml() {
    rejects(
        Bad::Playbook("name: x\nphases:\n  - name: [unclosed\n    steps: []\n"),
        3,
        "",
    );
}

#[test]
fn unknown_key_in_a_step() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        timout: 5m\n",
        ),
        6,
        "unknown field `timout`",
    );
}

#[test]
fn unknown_key_at_the_top_of_a_playbook() {
    rejects(
        Bad::Playbook("name: x\nwave: [1]\nphases:\n  - name: p\n    steps: []\n"),
        2,
        "unknown field `wave`",
    );
}

#[test]
fn wrong_type() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        retries: many\n",
        ),
        6,
        "",
    );
}

#[test]
fn a_step_with_no_action() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - name: nothing to do\n        retries: 2\n",
        ),
        5,
        "has no action",
    );
}

#[test]
fn a_step_with_two_actions() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - name: both\n        run: echo a\n        sh: echo b\n",
        ),
        5,
        "has 2 actions (run, sh)",
    );
}

#[test]
fn duplicate_host_names() {
    rejects(
        Bad::Inventory(
            "clients:\n  a:\n    hosts:\n      - { name: h1, address: 10.0.0.1, os: linux }\n  b:\n    hosts:\n      - { name: h1, address: 10.0.0.2, os: linux }\n",
        ),
        7,
        "host `h1` is already defined at line 4",
    );
}

#[test]
fn a_wave_list_that_cannot_cover_the_client() {
    rejects(
        Bad::Playbook(
            "name: x\nwaves: [1, 1]\nphases:\n  - name: p\n    steps:\n      - run: echo\n",
        ),
        2,
        "cover 2 of this client's 3 hosts",
    );
}

#[test]
fn a_client_wave_override_that_cannot_cover_it() {
    rejects(
        Bad::Inventory(
            "clients:\n  acme:\n    waves: [1]\n    hosts:\n      - { name: a1, address: 10.0.0.1, os: linux }\n      - { name: a2, address: 10.0.0.2, os: linux }\n",
        ),
        3,
        "cover 1 of this client's 2 hosts",
    );
}

#[test]
fn an_empty_client() {
    rejects(
        Bad::Inventory("clients:\n  acme:\n    hosts: []\n"),
        3,
        "client `acme` has an empty host list",
    );
}

#[test]
fn a_client_without_hosts() {
    rejects(
        Bad::Inventory("clients:\n  acme:\n    vars: { a: 1 }\n"),
        3,
        "client `acme` has no hosts",
    );
}

#[test]
fn a_percentage_over_100() {
    rejects(
        Bad::Playbook("name: x\nfailure_budget: \"150%\"\nphases:\n  - name: p\n    steps: []\n"),
        2,
        "must be between 0% and 100%",
    );
}

#[test]
fn a_duration_that_does_not_parse() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        timeout: 5 minutes\n",
        ),
        6,
        "is not a duration",
    );
}

#[test]
fn a_pause_that_is_neither_a_duration_nor_confirm() {
    rejects(
        Bad::Playbook("name: x\npause_between_waves: soon\nphases:\n  - name: p\n    steps: []\n"),
        2,
        "or write `confirm`",
    );
}

#[test]
fn an_undefined_template_variable() {
    rejects(
        Bad::Playbook(
            "name: x\nvars: { greeting: hi }\nphases:\n  - name: p\n    steps:\n      - run: echo {{ greting }}\n",
        ),
        6,
        "undefined variable `greting` (did you mean `greeting`?)",
    );
}

#[test]
fn a_template_syntax_error() {
    rejects(
        Bad::Playbook("name: x\nphases:\n  - name: p\n    steps:\n      - run: echo {{ oops\n"),
        5,
        "template syntax",
    );
}

#[test]
fn a_capture_name_that_cannot_be_a_variable() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        capture: { as: 1st-result }\n",
        ),
        6,
        "cannot be a variable name",
    );
}

#[test]
fn an_unknown_transport() {
    rejects(
        Bad::Inventory(
            "clients:\n  acme:\n    hosts:\n      - { name: a1, address: 10.0.0.1, os: linux, transport: telnet }\n",
        ),
        4,
        "telnet",
    );
}

#[test]
fn an_unknown_os() {
    rejects(
        Bad::Inventory(
            "clients:\n  acme:\n    hosts:\n      - { name: a1, address: 10.0.0.1, os: windoze }\n",
        ),
        4,
        "windoze",
    );
}

#[test]
fn a_host_without_an_address() {
    rejects(
        Bad::Inventory("clients:\n  acme:\n    hosts:\n      - name: a1\n        os: linux\n"),
        4,
        "host `a1` has no address",
    );
}

#[test]
fn a_template_reading_a_value_captured_later() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo {{ found }}\n      - run: ls\n        capture: { as: found, parse: lines }\n",
        ),
        5,
        "`found` is captured by step `run ls`, which runs after this one",
    );
}

#[test]
fn a_script_that_does_not_exist() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - script: { src: scripts/missing.sh }\n",
        ),
        5,
        "missing.sh does not exist",
    );
}

#[test]
fn the_same_name_captured_twice() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: ls\n        capture: { as: out }\n      - run: ls\n        capture: { as: out }\n",
        ),
        7,
        "`out` is already captured by the step at line 5",
    );
}

#[test]
fn a_duplicate_key() {
    rejects(
        Bad::Playbook("name: x\nname: y\nphases:\n  - name: p\n    steps: []\n"),
        2,
        "",
    );
}

#[test]
fn concurrency_zero() {
    rejects(
        Bad::Playbook("name: x\nconcurrency: 0\nphases:\n  - name: p\n    steps: []\n"),
        2,
        "concurrency 0",
    );
}

#[test]
fn a_missing_secret_fails_a_real_run_but_not_a_dry_run() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo {{ secret(name=\"NO_SUCH_SECRET_XY\") }}\n",
    );
    scratch.write("inventory.yml", GOOD_INVENTORY);
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"])
        .expect_code(0);
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("playbook.yml:5:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("secret `NO_SUCH_SECRET_XY` is not set: export the environment variable NO_SUCH_SECRET_XY"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_client_or_an_empty_selection() {
    let scratch = Scratch::new();
    scratch.write("playbook.yml", GOOD_PLAYBOOK);
    scratch.write("inventory.yml", GOOD_INVENTORY);
    let run = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--dry-run",
        "--client",
        "nope",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--client nope: no such client") && run.stderr.contains("acme"),
        "{}",
        run.stderr
    );
    let run = scratch.orchestrate(&[
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--dry-run",
        "--limit",
        "zz*",
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("no host"), "{}", run.stderr);
}

#[test]
fn a_missing_file() {
    let scratch = Scratch::new();
    scratch.write("inventory.yml", GOOD_INVENTORY);
    let run = scratch.orchestrate(&["validate", "nope.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("cannot read nope.yml"),
        "{}",
        run.stderr
    );
}

#[test]
fn several_problems_are_reported_together() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - name: none\n      - run: a\n        sh: b\n",
    );
    scratch.write("inventory.yml", "clients:\n  acme:\n    hosts: []\n");
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    for expected in [
        "playbook.yml:5:",
        "playbook.yml:6:",
        "inventory.yml:3:",
        "3 problems found",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
}

/// `validate` parses every rendered PowerShell and shell step: a syntax
/// error is found on the controller, not on the canary.
#[track_caller]
fn script_error(playbook: &str, os: &str, line: usize, says: &[&str]) {
    let scratch = Scratch::new();
    scratch.write("playbook.yml", playbook);
    scratch.write(
        "inventory.yml",
        &format!("clients:\n  acme:\n    hosts:\n      - {{ name: w1, address: 10.0.0.1, os: {os} }}\n      - {{ name: w2, address: 10.0.0.2, os: {os} }}\n"),
    );
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!("playbook.yml:{line}:")),
        "{}",
        run.stderr
    );
    for s in says {
        assert!(run.stderr.contains(s), "expected {s:?} in:\n{}", run.stderr);
    }
}

#[test]
fn a_powershell_syntax_error_names_host_step_and_script_line() {
    script_error(
        "name: x\nphases:\n  - name: install\n    steps:\n      - name: add exclusions\n        powershell: |\n          $ErrorActionPreference = 'Stop'\n          if ($exclusions {\n            Add-MpPreference -ExclusionPath 'C:\\x'\n          }\n",
        "windows",
        8,
        &[
            "host w1 (and 1 more)",
            "step `add exclusions` (install)",
            "PowerShell syntax error at line 2",
        ],
    );
}

#[test]
fn a_shell_syntax_error_names_host_step_and_script_line() {
    script_error(
        "name: x\nphases:\n  - name: p\n    steps:\n      - name: unfinished if\n        sh: |\n          echo start\n          if [ -f /etc/kesl ]; then\n            echo found\n",
        "linux",
        8,
        &[
            "step `unfinished if` (p)",
            "shell syntax error at line 2",
            "`fi` is missing",
        ],
    );
}

#[test]
fn an_exit_code_above_255_on_a_step_for_a_posix_system() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: msiexec /i new.msi\n        os: [linux, windows]\n        reboot_codes: [3010]\n",
        ),
        7,
        "reboot_codes has 3010, which a POSIX host can never return: exit codes there are 0 to 255 (exit 3010 arrives as 194)",
    );
}

#[test]
fn an_exit_code_above_255_on_a_step_that_would_run_on_a_linux_host() {
    // The step does not say its os: the planner knows it per host, and
    // says which hosts and which step.
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - name: install\n        run: setup.exe /quiet\n        ok_codes: [0, 3010]\n",
        ),
        5,
        "host a1 (and 2 more hosts), step `install` (p): ok_codes has 3010, which a POSIX host can never return",
    );
}

#[test]
fn an_exit_code_above_255_is_fine_on_windows_hosts() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - name: install\n        run: setup.exe /quiet\n        ok_codes: [0, 3010]\n",
    );
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: w1, address: 10.0.0.1, os: windows }\n",
    );
    scratch
        .orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(0);
}

#[test]
fn a_timeout_of_zero() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        timeout: 0s\n",
        ),
        6,
        "`timeout: 0s` would stop the step before it starts",
    );
}

#[test]
fn no_ok_codes_at_all() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        ok_codes: []\n",
        ),
        6,
        "`ok_codes: []` accepts no exit code",
    );
}

#[test]
fn an_upload_without_a_destination() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - upload: { src: playbook.yml, dest: \"\" }\n",
        ),
        5,
        "an upload with an empty `dest`",
    );
}

#[test]
fn more_retries_than_a_step_may_have() {
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n        retries: 1000000\n",
        ),
        6,
        "`retries: 1000000` is more than the 100 a step may have",
    );
}

#[test]
fn a_template_whose_loops_run_for_ever_is_an_error_not_a_hang() {
    let started = std::time::Instant::now();
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo {% for i in range(end=100000) %}{% for j in range(end=100000) %}x{% endfor %}{% endfor %}\n",
        ),
        5,
        // Past the size or the time bound, whichever comes first.
        "a loop in it runs too long",
    );
    rejects(
        Bad::Playbook(
            "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo {% for i in range(end=100000000000) %}x{% endfor %}\n",
        ),
        5,
        "range",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Two loops nested over `range()` that write nothing: nothing ever reaches
/// the output bound, and Tera has no limit of its own, so this hung
/// `validate` for hours. Now the render is given up on at its deadline.
#[test]
fn a_template_looping_without_writing_is_stopped_at_the_deadline() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - name: silent loop\n        run: echo {% for i in range(end=100000) %}{% for j in range(end=100000) %}{% endfor %}{% endfor %}done\n",
    );
    scratch.write("inventory.yml", GOOD_INVENTORY);
    for args in [
        &["validate", "playbook.yml", "-i", "inventory.yml"][..],
        &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"][..],
    ] {
        let mut child = scratch
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (code, took) = harness::exit_within(&mut child, std::time::Duration::from_secs(40));
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        // One deadline, not one per host: the template fails the others at once.
        assert!(
            took < std::time::Duration::from_secs(20),
            "{args:?}: took {took:?}"
        );
        for needed in [
            "playbook.yml:6:",
            "host a1 (and 2 more hosts), step `silent loop` (p)",
            "rendering took longer than 5s: a loop in it runs too long (or never ends)",
        ] {
            assert!(
                stderr.contains(needed),
                "{args:?}: {needed:?} in:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
