//! Text that came from an endpoint or an inventory reaches the terminal
//! inert: a step's stderr cannot set the window title, clear the screen or
//! print a forged green `OK` line, and a host name with a newline cannot
//! forge a line of its own, in the live output, the summary, `status` or
//! the dry run.

use crate::harness;

use harness::Scratch;

/// What an endpoint under someone else's control might print: a new
/// window title, a cleared screen, and a green line claiming success.
/// (Single-quoted in the YAML, so its own quotes are doubled.)
const HOSTILE_STDERR: &str = r"printf ''\033]0;owned\007\033[2J\033[32m    OK acme/h99\033[0m\302\233\177\342\200\256\n'' >&2; exit 1";

/// Two hosts, the second named with a newline, a forged line and a
/// window title. The step fails with [`HOSTILE_STDERR`] and so does its
/// rollback, so both hosts end `rollback_failed` and `status` lists them
/// with their errors.
fn fleet(scratch: &Scratch) {
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: h01, address: 127.0.0.1, os: linux, transport: local }\n      - { name: \"h02\\n    OK acme/forged\\e]2;title\\a\", address: 127.0.0.1, os: linux, transport: local }\n",
    );
    scratch.write(
        "playbook.yml",
        &format!(
            "name: hostile\nwaves: [\"100%\"]\nfailure_budget: \"100%\"\nphases:\n  - name: p\n    steps:\n      - name: talks back\n        sh: '{HOSTILE_STDERR}'\n        rollback:\n          - sh: exit 1\n",
        ),
    );
}

/// Fails if `text` holds anything a terminal would act on, other than the
/// newlines that end its own lines, or a line a host name forged.
#[track_caller]
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "{what} holds raw {bad:?}:\n{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("    OK acme/forged"),
            "{what}: a host name forged a line:\n{text}"
        );
    }
}

#[test]
fn endpoint_output_and_host_names_reach_the_terminal_escaped() {
    let scratch = Scratch::new();
    fleet(&scratch);
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(3);
    assert_inert("the live output and the summary", &run.stdout);
    assert!(
        run.stdout
            .contains(r"\e]0;owned\u{7}\e[2J\e[32m    OK acme/h99"),
        "the escapes are shown, not dropped:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(r"h02\n    OK acme/forged"),
        "{}",
        run.stdout
    );

    let run_id = scratch.newest_run_id();
    let status = scratch.orchestrate(&["status", &run_id, "--state", harness::JOURNAL]);
    status.expect_code(0);
    assert_inert("status", &status.stdout);

    let dry = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"]);
    dry.expect_code(0);
    assert_inert("the dry run", &dry.stdout);
}
