//! How a failed host ends when its rollback puts back a product that no
//! longer gets updates (`marks: restores_unsupported_product`, issue #13):
//! `rolled_back_to_unsupported_product`, in the report, the journal,
//! `status`, the summary, HTML and JUnit; exit 1 like `failed`.
//!
//! Local hosts, each in its own folder: the "product" a step removes and
//! the rollback puts back is a file there, as an operator would find it.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{JOURNAL, RUN_REPORTING, Scratch};
use crate::windows_fleet::host;

/// Removes `product` from the host, then fails in `install`; the rollback
/// puts it back with a step marked `restores_unsupported_product` unless
/// the host's `reinstall` var is false (its `when`).
const PLAYBOOK: &str = r#"name: outcomes
vars: { reinstall: true, reinstall_exit: 0 }
failure_budget: "100%"
phases:
  - name: uninstall
    steps:
      - name: remove the old product
        sh: rm {{ dir }}/product
        marks: protection_off
        rollback:
          - name: put the old product back
            when: reinstall
            marks: restores_unsupported_product
            sh: echo old > {{ dir }}/product; exit {{ reinstall_exit }}
  - name: install
    steps:
      - name: install the new product
        sh: exit 1
on_failure:
  - name: make sure something protects the host
    sh: test -f {{ dir }}/product || echo new > {{ dir }}/product
"#;

/// `count` local hosts `h01`.. with the old product installed; `vars`
/// (a YAML flow mapping) for the client.
fn fleet(scratch: &Scratch, count: usize, vars: &str) -> Vec<PathBuf> {
    let dirs = scratch.local_fleet(count);
    for dir in &dirs {
        std::fs::write(dir.join("product"), "old\n").unwrap();
    }
    let inventory = scratch.read("inventory.yml");
    scratch.write(
        "inventory.yml",
        &inventory.replace("  acme:\n", &format!("  acme:\n    vars: {vars}\n")),
    );
    scratch.write("playbook.yml", PLAYBOOK);
    dirs
}

fn run(scratch: &Scratch) -> (crate::harness::Run, Value) {
    let run = scratch.orchestrate(RUN_REPORTING);
    (run, scratch.report())
}

#[test]
fn a_rollback_that_puts_the_unsupported_product_back_is_its_own_state_with_exit_1() {
    let scratch = Scratch::new();
    let dirs = fleet(&scratch, 1, "{}");
    let (run, report) = run(&scratch);
    run.expect_code(1);
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("product")).unwrap(),
        "old\n"
    );
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "rolled_back_to_unsupported_product");
    let error = h01["error"].as_str().unwrap();
    assert!(error.contains("install the new product"), "{error}");
    assert!(error.contains("no longer gets updates"), "{error}");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["clients"][0]["status"], "failed");
    // The summary counts it apart and says what it means.
    assert!(run.stdout.contains("unsupported"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("1 host was rolled back to a product that no longer gets updates"),
        "{}",
        run.stdout
    );
    // The journal says so too: the replayed report and `status`.
    assert_eq!(
        host(&scratch.journaled_report(), "h01")["status"],
        "rolled_back_to_unsupported_product"
    );
    let run_id = scratch.newest_run_id();
    let status = scratch
        .orchestrate(&["status", &run_id, "--state", JOURNAL, "--format", "json"])
        .expect_code(0)
        .json();
    assert_eq!(
        status["clients"][0]["hosts"]["rolled_back_to_unsupported_product"],
        1
    );
    assert_eq!(status["on_unsupported_product"][0]["host"], "h01");
    let human = scratch.orchestrate(&["status", &run_id, "--state", JOURNAL]);
    assert!(
        human
            .stdout
            .contains("rolled_back_to_unsupported_product h01"),
        "{}",
        human.stdout
    );
}

#[test]
fn junit_and_html_name_the_state() {
    let scratch = Scratch::new();
    fleet(&scratch, 1, "{}");
    run(&scratch).0.expect_code(1);
    let run_id = scratch.newest_run_id();
    let junit = scratch
        .orchestrate(&["report", &run_id, "--state", JOURNAL, "--format", "junit"])
        .expect_code(0)
        .stdout
        .clone();
    let xml = roxmltree::Document::parse(&junit).unwrap();
    let failure = xml
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("the host is a failed test case");
    assert_eq!(
        failure.attribute("type"),
        Some("rolled_back_to_unsupported_product")
    );
    assert!(
        failure
            .attribute("message")
            .unwrap()
            .contains("rolled back to a product that no longer gets updates")
    );
    let html = scratch
        .orchestrate(&["report", &run_id, "--state", JOURNAL, "--format", "html"])
        .expect_code(0)
        .stdout
        .clone();
    let page = scraper::Html::parse_document(&html);
    let badges: Vec<String> = page
        .select(&scraper::Selector::parse(".badge.s-rolled_back_to_unsupported_product").unwrap())
        .map(|b| b.text().collect())
        .collect();
    assert!(
        badges.contains(&"Rolled back to an unsupported product".to_string()),
        "{badges:?}"
    );
    assert!(html.contains("no longer gets updates"));
}

#[test]
fn a_marked_rollback_step_that_did_not_run_leaves_the_host_plain_failed() {
    let scratch = Scratch::new();
    let dirs = fleet(&scratch, 1, "{ reinstall: false }");
    let (run, report) = run(&scratch);
    run.expect_code(1);
    // on_failure put the new product on instead.
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("product")).unwrap(),
        "new\n"
    );
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed");
    assert_eq!(h01["rollback"][0]["status"], "skipped");
    assert!(
        !run.stdout.contains("no longer gets updates"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_marked_rollback_step_that_fails_is_rollback_failed_exit_3() {
    let scratch = Scratch::new();
    fleet(&scratch, 1, "{ reinstall_exit: 4 }");
    let (run, report) = run(&scratch);
    run.expect_code(3);
    assert_eq!(host(&report, "h01")["status"], "rollback_failed");
}

#[test]
fn the_mark_on_a_step_of_a_phase_is_an_error_at_its_line() {
    let scratch = Scratch::new();
    fleet(&scratch, 1, "{}");
    scratch.write(
        "playbook.yml",
        "name: wrong place\nphases:\n  - name: install\n    steps:\n      - name: reinstall\n        sh: 'true'\n        marks: restores_unsupported_product\n",
    );
    let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(2);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(text.contains("playbook.yml:5:"), "{text}");
    assert!(
        text.contains("goes on a rollback or on_failure step"),
        "{text}"
    );
}
