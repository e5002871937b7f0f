//! The rendered plan of every shipped playbook on the example inventory,
//! compared with the one recorded in `tests/golden/NAME.plan.json`.
//!
//! The shipped playbooks share their common parts through `include:`; this
//! is what proves that moving a part into `playbooks/common/` changed no
//! command on any host. `origin` (where a step is written) is left out of
//! the comparison, since moving a step is exactly what changes it. A
//! change to a playbook that is meant to change its plan is recorded with
//! `UPDATE_GOLDEN=1 cargo nextest run -E 'test(/golden/)'`; the diff of the
//! golden file is then the review of what changed on which host.

use crate::harness::{self, repo};

use serde_json::Value;

fn without_origins(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("origin");
            map.values_mut().for_each(without_origins);
        }
        Value::Array(items) => items.iter_mut().for_each(without_origins),
        _ => {}
    }
}

/// The first place where two plans differ, as a JSON path and both values.
fn first_difference(path: &str, want: &Value, got: &Value) -> Option<String> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                if let Some(d) = first_difference(&format!("{path}.{key}"), x, y) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if want == got => None,
        _ => Some(format!("{path}:\n  recorded: {want}\n  now:      {got}")),
    }
}

#[test]
fn every_shipped_playbook_plans_as_recorded_in_tests_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut playbooks: Vec<_> = std::fs::read_dir(repo().join("playbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    playbooks.sort();
    assert!(playbooks.len() >= 6, "{playbooks:?}");
    let mut stale = Vec::new();
    for path in &playbooks {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let playbook = format!("playbooks/{name}.yml");
        let run = harness::Run::new(harness::orchestrate_in(
            &repo(),
            &[
                "run",
                &playbook,
                "-i",
                "inventory/example.yml",
                "--dry-run",
                "--format",
                "json",
            ],
            &[],
        ));
        run.expect_code(0);
        let mut now = run.json();
        without_origins(&mut now);
        let golden = repo().join(format!("tests/golden/{name}.plan.json"));
        if update {
            let text = serde_json::to_string_pretty(&now).unwrap() + "\n";
            std::fs::write(&golden, text).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!("{}: {e}; record it with UPDATE_GOLDEN=1", golden.display())
        });
        let mut recorded: Value = serde_json::from_str(&text).unwrap();
        without_origins(&mut recorded);
        if let Some(difference) = first_difference("$", &recorded, &now) {
            stale.push(format!("{playbook}: {difference}"));
        }
    }
    assert!(
        stale.is_empty(),
        "plans differ from tests/golden (if the change is meant, record it with UPDATE_GOLDEN=1 and review the diff):\n{}",
        stale.join("\n")
    );
}
