//! `include: FILE`: playbooks that take phases and steps from other files.
//!
//! An include in `phases:` inserts the phases of a file, one in `steps:`,
//! `on_failure:` or `rollback:` inserts its steps; `vars:` beside it bind
//! for the included part only. Paths are relative to the including file,
//! and so are `script:` and `upload:` sources in an included file. Errors
//! name the file they are in and the chain of includes that led there; the
//! plan says where each step came from; `resume` refuses when any file the
//! plan read has changed.

use crate::harness;

use harness::Scratch;
use serde_json::Value;

const STATE: &str = ".orchestrate/state.db";

/// One local host working in its own folder `host/`.
fn one_local_host(scratch: &Scratch) {
    let dir = scratch.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    scratch.write(
        "inventory.yml",
        &format!(
            "clients:\n  acme:\n    hosts:\n      - {{ name: h1, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}' }} }}\n",
            dir.display()
        ),
    );
}

fn plan_json(scratch: &Scratch, playbook: &str) -> Value {
    scratch.plan_json(playbook, "inventory.yml")
}

/// `(phase, name, command, origin file, origin line)` of each step of h1.
fn steps_of(plan: &Value, list: &str) -> Vec<(String, String, String, String, u64)> {
    plan["clients"][0]["hosts"][0][list]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["phase"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
                s["command"].as_str().unwrap_or("").to_string(),
                s["origin"]["file"].as_str().unwrap().to_string(),
                s["origin"]["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn step(
    phase: &str,
    name: &str,
    command: &str,
    file: &str,
    line: u64,
) -> (String, String, String, String, u64) {
    (phase.into(), name.into(), command.into(), file.into(), line)
}

#[test]
fn phases_and_steps_are_included_with_vars_bound_for_the_included_part_only() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbook.yml",
        r#"name: with includes
vars: { product: old, greeting: hi }
on_failure:
  - include: common/safety.yml
phases:
  - include: common/precheck.yml
    vars: { product: kesl }
  - name: work
    steps:
      - name: before
        sh: echo {{ greeting }} {{ product }}
      - include: common/say.yml
        vars: { greeting: hello }
      - name: after
        sh: echo {{ greeting }} {{ product }}
"#,
    );
    scratch.write(
        "common/precheck.yml",
        r#"- name: precheck
  steps:
    - name: look for {{ product }}
      sh: which {{ product }}
"#,
    );
    scratch.write(
        "common/say.yml",
        r#"- name: greet
  sh: echo {{ greeting }} {{ product }}
"#,
    );
    scratch.write("common/safety.yml", "- name: antivirus on\n  sh: echo on\n");
    let plan = plan_json(&scratch, "playbook.yml");
    assert_eq!(
        steps_of(&plan, "steps"),
        [
            step(
                "precheck",
                "look for {{ product }}",
                "which kesl",
                "common/precheck.yml",
                3
            ),
            step("work", "before", "echo hi old", "playbook.yml", 10),
            step("work", "greet", "echo hello old", "common/say.yml", 1),
            step("work", "after", "echo hi old", "playbook.yml", 14),
        ]
    );
    assert_eq!(
        steps_of(&plan, "on_failure"),
        [step(
            "on_failure",
            "antivirus on",
            "echo on",
            "common/safety.yml",
            1
        )]
    );

    let text = scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"])
        .expect_code(0)
        .stdout
        .clone();
    assert!(text.contains("greet  (common/say.yml:1)"), "{text}");
    assert!(text.contains("before  (playbook.yml:10)"), "{text}");
}

#[test]
fn an_included_variable_is_not_defined_outside_its_include() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbook.yml",
        r#"name: scoped
phases:
  - name: work
    steps:
      - include: say.yml
        vars: { word: inside }
      - sh: echo {{ word }}
"#,
    );
    scratch.write("say.yml", "- sh: echo {{ word }}\n");
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("playbook.yml:7:") && run.stderr.contains("undefined variable `word`"),
        "{}",
        run.stderr
    );
}

#[test]
fn includes_nest_with_paths_relative_to_the_including_file() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbooks/main.yml",
        r#"name: nested
phases:
  - name: remove
    steps:
      - include: common/removal.yml
        vars: { package: kesl }
"#,
    );
    scratch.write(
        "playbooks/common/removal.yml",
        r#"- name: stop
  sh: systemctl stop {{ package }}
- include: parts/purge.yml
  vars: { how: --purge }
"#,
    );
    scratch.write(
        "playbooks/common/parts/purge.yml",
        r#"- name: purge
  sh: apt-get remove {{ how }} {{ package }}
  rollback:
    - include: ../reinstall.yml
"#,
    );
    scratch.write(
        "playbooks/common/reinstall.yml",
        "- name: reinstall\n  sh: apt-get install {{ package }}\n",
    );
    let plan = plan_json(&scratch, "playbooks/main.yml");
    assert_eq!(
        steps_of(&plan, "steps"),
        [
            step(
                "remove",
                "stop",
                "systemctl stop kesl",
                "playbooks/common/removal.yml",
                1
            ),
            step(
                "remove",
                "purge",
                "apt-get remove --purge kesl",
                "playbooks/common/parts/purge.yml",
                1
            ),
        ]
    );
    let rollback = &plan["clients"][0]["hosts"][0]["steps"][1]["rollback"][0];
    assert_eq!(rollback["command"], "apt-get install kesl");
    assert_eq!(
        rollback["origin"]["file"], "playbooks/common/reinstall.yml",
        "`..` resolved: {rollback}"
    );
}

#[test]
fn an_include_cycle_is_an_error_naming_the_cycle() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbook.yml",
        "name: cycle\nphases:\n  - name: p\n    steps:\n      - include: a.yml\n",
    );
    scratch.write("a.yml", "- sh: echo a\n- include: b.yml\n");
    scratch.write("b.yml", "- include: a.yml\n");
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("b.yml:1:12: an include cycle: a.yml → b.yml → a.yml"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("included from a.yml:2:12")
            && run.stderr.contains("included from playbook.yml:5:18"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_included_file_is_an_error_at_the_include_line() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbook.yml",
        "name: missing\nphases:\n  - include: common/nowhere.yml\n",
    );
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("playbook.yml:3:14: cannot read the included file common/nowhere.yml"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("3 │   - include: common/nowhere.yml")
            || run.stderr.contains("3 |   - include: common/nowhere.yml"),
        "the snippet shows the include line: {}",
        run.stderr
    );
}

#[test]
fn an_error_in_an_included_file_is_at_its_own_line_and_column_with_its_chain() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbooks/windows.yml",
        "name: chain\nphases:\n  - name: p\n    steps:\n      - include: common/outer.yml\n",
    );
    scratch.write(
        "playbooks/common/outer.yml",
        "- sh: echo outer\n- include: inner.yml\n",
    );
    scratch.write(
        "playbooks/common/inner.yml",
        "- name: typo\n  sh: echo inner\n  timout: 5m\n",
    );
    let run = scratch.orchestrate(&["validate", "playbooks/windows.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    let err = &run.stderr;
    assert!(
        err.contains("playbooks/common/inner.yml:3:3: unknown field `timout`"),
        "{err}"
    );
    let outer = err.find("included from playbooks/common/outer.yml:2:12");
    let top = err.find("included from playbooks/windows.yml:5:18");
    assert!(
        outer.is_some() && top.is_some() && outer < top,
        "innermost first: {err}"
    );
    assert!(
        err.contains("timout: 5m"),
        "the snippet of inner.yml: {err}"
    );

    // A template error found at plan time also points into the included file.
    scratch.write(
        "playbooks/common/inner.yml",
        "- name: typo\n  sh: echo {{ nothing_here }}\n",
    );
    let run = scratch.orchestrate(&["validate", "playbooks/windows.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("playbooks/common/inner.yml:2:")
            && run.stderr.contains("undefined variable `nothing_here`")
            && run
                .stderr
                .contains("included from playbooks/windows.yml:5:18"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_include_takes_no_step_keys_beside_vars() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch.write(
        "playbook.yml",
        "name: x\nphases:\n  - name: p\n    steps:\n      - include: a.yml\n        sh: echo no\n",
    );
    scratch.write("a.yml", "- sh: echo a\n");
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("playbook.yml:5:9: an include of steps takes only `vars` beside it, not sh"),
        "{}",
        run.stderr
    );
}

/// A playbook whose included step runs a script kept beside the included
/// file; `fail` makes the last step fail, so the run can be resumed.
fn scripted(scratch: &Scratch, fail: bool) {
    scratch.write(
        "playbook.yml",
        &format!(
            "name: scripted\nphases:\n  - name: work\n    steps:\n      - include: common/steps.yml\n      - name: last\n        sh: echo last >> {{{{ dir }}}}/log{}\n",
            if fail { "; exit 1" } else { "" }
        ),
    );
    scratch.write(
        "common/steps.yml",
        "- name: hello\n  script: { src: hello.sh, args: [\"{{ dir }}\"] }\n",
    );
    scratch.write("common/hello.sh", "echo hello-from-common >> \"$1/log\"\n");
}

fn log(scratch: &Scratch) -> String {
    std::fs::read_to_string(scratch.path().join("host/log")).unwrap_or_default()
}

#[test]
fn a_script_in_an_included_file_is_taken_from_beside_that_file() {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scratch_script_only(&scratch);
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(0);
    assert_eq!(log(&scratch), "hello-from-common\nlast\n");
}

fn scratch_script_only(scratch: &Scratch) {
    scripted(scratch, false);
    // A decoy where a path relative to the playbook would find it.
    scratch.write("hello.sh", "echo WRONG-hello >> \"$1/log\"\n");
    let plan = plan_json(scratch, "playbook.yml");
    let command = plan["clients"][0]["hosts"][0]["steps"][0]["command"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(command.starts_with("script common/hello.sh "), "{command}");
}

fn only_run_id(scratch: &Scratch) -> String {
    let runs = scratch
        .orchestrate(&["status", "--state", STATE, "--format", "json"])
        .expect_code(0)
        .json();
    runs[0]["run_id"].as_str().unwrap().to_string()
}

/// Runs the failing playbook, changes `file` with `edit`, and checks that
/// `resume` refuses naming it, and that `--force` says what changed.
fn resume_refuses_after(file: &str, what: &str) {
    let scratch = Scratch::new();
    one_local_host(&scratch);
    scripted(&scratch, true);
    scratch
        .orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"])
        .expect_code(1);
    let run_id = only_run_id(&scratch);
    let path = scratch.path().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&path, text).unwrap();
    std::fs::write(scratch.path().join("host/log"), "").unwrap();

    let refused = scratch.orchestrate(&["resume", &run_id, "--state", STATE]);
    refused.expect_code(2);
    let absolute = std::fs::canonicalize(&path).unwrap();
    assert!(
        refused.stderr.contains(&format!(
            "the {what} {} changed since run {run_id} started",
            absolute.display()
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(log(&scratch), "", "nothing ran");

    let forced = scratch.orchestrate(&["resume", &run_id, "--state", STATE, "--force"]);
    assert!(
        forced
            .stderr
            .contains(&format!("warning: the {what} {}", absolute.display())),
        "{}",
        forced.stderr
    );
    assert!(log(&scratch).contains("last"), "resumed: {}", log(&scratch));
}

#[test]
fn resume_refuses_after_an_included_file_changed() {
    resume_refuses_after("common/steps.yml", "included file");
}

#[test]
fn resume_refuses_after_a_script_source_changed() {
    resume_refuses_after("common/hello.sh", "script");
}
