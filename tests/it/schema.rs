//! `orchestrate schema KIND`: JSON Schemas of playbooks, inventories and
//! the files of steps and phases playbooks include, for editors.
//!
//! The files in `docs/schema/` are what the generator prints (rewritten
//! with `UPDATE_GOLDEN=1`); every shipped playbook, common part and
//! inventory names its schema on its first line and validates against it
//! under an independent validator (python-jsonschema, installed by
//! `scripts/deps/schema.sh`); and on a set of small files, right and wrong,
//! the schema and the loader agree.

use crate::harness::{self, Scratch, repo};

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const KINDS: [&str; 5] = ["playbook", "inventory", "steps", "phases", "probes"];

fn schema_path(kind: &str) -> PathBuf {
    repo().join(format!("docs/schema/{kind}.schema.json"))
}

#[test]
fn the_schema_files_in_docs_are_what_the_generator_prints() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    for kind in KINDS {
        let run = harness::Run::new(harness::orchestrate_in(&repo(), &["schema", kind], &[]));
        run.expect_code(0);
        let printed = run.json();
        assert_eq!(
            printed["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{kind}"
        );
        if update {
            std::fs::write(schema_path(kind), &run.stdout).unwrap();
            continue;
        }
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(schema_path(kind)).unwrap()).unwrap();
        assert!(
            written == printed,
            "docs/schema/{kind}.schema.json is not what `orchestrate schema {kind}` prints; rewrite it with UPDATE_GOLDEN=1"
        );
    }
}

/// Validates each `(name, schema kind, instance)` with python-jsonschema;
/// returns each name's errors.
fn validate(cases: &[(String, &str, Value)]) -> serde_json::Map<String, Value> {
    let scratch = Scratch::new();
    let batch: Vec<Value> = cases
        .iter()
        .map(|(name, kind, instance)| {
            json!({ "name": name, "schema": schema_path(kind), "instance": instance })
        })
        .collect();
    let file = scratch.write("batch.json", &serde_json::to_string(&batch).unwrap());
    let output = std::process::Command::new("python3")
        .arg(repo().join("tests/schema/validate.py"))
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/deps/schema.sh installs jsonschema)");
    assert!(
        output.status.success(),
        "the validator failed (is jsonschema installed? scripts/deps/schema.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    results.as_object().unwrap().clone()
}

/// YAML as the loader reads it (YAML 1.2, serde-saphyr), as JSON.
fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_file_names_its_schema_and_validates_against_it() {
    let mut shipped: Vec<(PathBuf, &str)> = Vec::new();
    for path in yaml_files(&repo().join("playbooks")) {
        shipped.push((path, "playbook"));
    }
    for path in yaml_files(&repo().join("playbooks/common")) {
        let text = std::fs::read_to_string(&path).unwrap();
        let kind = if text.contains("$schema=../../docs/schema/phases.schema.json") {
            "phases"
        } else if text.contains("$schema=../../docs/schema/probes.schema.json") {
            "probes"
        } else {
            "steps"
        };
        shipped.push((path, kind));
    }
    shipped.push((repo().join("inventory/example.yml"), "inventory"));
    assert!(shipped.len() >= 8, "{shipped:?}");

    let mut cases = Vec::new();
    for (path, kind) in &shipped {
        let text = std::fs::read_to_string(path).unwrap();
        let folder = path.parent().unwrap();
        let relative = pathdiff(&schema_path(kind), folder);
        let first = text.lines().next().unwrap_or("");
        assert_eq!(
            first,
            format!("# yaml-language-server: $schema={relative}"),
            "{} names its schema on its first line",
            path.display()
        );
        cases.push((path.display().to_string(), *kind, yaml_to_json(&text)));
    }
    let results = validate(&cases);
    let failing: Vec<String> = results
        .iter()
        .filter(|(_, errors)| !errors.as_array().unwrap().is_empty())
        .map(|(name, errors)| format!("{name}: {errors}"))
        .collect();
    assert!(failing.is_empty(), "{}", failing.join("\n"));
    assert_eq!(results.len(), shipped.len());
}

/// `target` relative to the folder `from` (both under the repository).
fn pathdiff(target: &Path, from: &Path) -> String {
    let root = repo();
    let target = target.strip_prefix(&root).unwrap();
    let from = from.strip_prefix(&root).unwrap();
    let up = "../".repeat(from.components().count());
    format!("{up}{}", target.display())
}

const GOOD_INVENTORY: &str = "clients:\n  acme:\n    hosts:\n      - { name: h1, address: 127.0.0.1, os: linux, transport: local }\n";
const GOOD_PLAYBOOK: &str = "name: x\nphases:\n  - name: p\n    steps:\n      - run: echo\n";

/// A playbook whose only step is `step` (indented as a list item).
fn with_step(step: &str) -> String {
    format!("name: x\nphases:\n  - name: p\n    steps:\n      - {step}\n")
}

#[test]
fn the_schema_and_the_loader_agree_on_what_is_valid() {
    // (what, kind, file, valid)
    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("a minimal playbook", "playbook", GOOD_PLAYBOOK.into(), true),
        (
            "durations in every form",
            "playbook",
            "name: x\npause_between_waves: 1h30m\nphases:\n  - name: p\n    steps:\n      - { run: echo, timeout: 90, retries: 2, retry_delay: 500ms }\n      - wait: 2d\n      - reboot: { timeout: 10m }\n".into(),
            true,
        ),
        (
            "waves as counts and shares",
            "playbook",
            "name: x\nwaves: [1, \"10%\", \"12.5%\", \"100%\"]\nfailure_budget: \"5%\"\npause_between_waves: confirm\nphases:\n  - name: p\n    steps: []\n".into(),
            true,
        ),
        (
            "os as one or a list",
            "playbook",
            "name: x\nos: windows\nphases:\n  - name: p\n    steps:\n      - { run: echo, os: [linux, macos] }\n".into(),
            true,
        ),
        (
            "includes with vars",
            "playbook",
            "name: x\non_failure:\n  - include: steps.yml\nphases:\n  - include: phases.yml\n    vars: { a: 1 }\n  - name: p\n    steps:\n      - include: steps.yml\n        vars: { b: two }\n".into(),
            true,
        ),
        ("two actions", "playbook", with_step("{ run: echo a, sh: echo b }"), false),
        ("no action", "playbook", with_step("{ name: nothing, retries: 2 }"), false),
        ("a null action", "playbook", with_step("{ name: nothing, run: ~ }"), false),
        ("a duration in words", "playbook", with_step("{ run: echo, timeout: 5 minutes }"), false),
        ("a duration with a bad unit", "playbook", with_step("{ run: echo, retry_delay: 5x }"), false),
        (
            "a share over 100%",
            "playbook",
            "name: x\nwaves: [1, \"150%\"]\nphases:\n  - name: p\n    steps: []\n".into(),
            false,
        ),
        (
            "a wave that is neither count nor share",
            "playbook",
            "name: x\nwaves: [1, ten]\nphases:\n  - name: p\n    steps: []\n".into(),
            false,
        ),
        (
            "a fractional wave",
            "playbook",
            "name: x\nwaves: [1.5]\nphases:\n  - name: p\n    steps: []\n".into(),
            false,
        ),
        ("an unknown step key", "playbook", with_step("{ run: echo, timout: 5m }"), false),
        ("an unknown OS", "playbook", with_step("{ run: echo, os: beos }"), false),
        ("an unknown capture format", "playbook", with_step("{ run: echo, capture: { as: x, parse: xml } }"), false),
        ("an unknown mark", "playbook", with_step("{ run: echo, marks: protection_maybe }"), false),
        (
            "a pause that is no duration",
            "playbook",
            "name: x\npause_between_waves: soon\nphases:\n  - name: p\n    steps: []\n".into(),
            false,
        ),
        ("an include with an action", "playbook", with_step("{ include: steps.yml, run: echo }"), false),
        ("an include with a name", "playbook", with_step("{ include: steps.yml, name: x }"), false),
        (
            "a phase with a name and an include",
            "playbook",
            "name: x\nphases:\n  - { name: p, include: phases.yml }\n".into(),
            false,
        ),
        (
            "a playbook without phases",
            "playbook",
            "name: x\n".into(),
            false,
        ),
        ("a minimal inventory", "inventory", GOOD_INVENTORY.into(), true),
        (
            "an inventory with every level",
            "inventory",
            "defaults: { transport: ssh, user: u, connect_timeout: 10s, ssh: { known_hosts: k } }\nclients:\n  acme:\n    waves: [1, \"100%\"]\n    failure_budget: 1\n    winrm: { port: 5986, tls: true, auth: ntlm }\n    hosts:\n      - { name: h1, address: 127.0.0.1, os: linux, transport: local, vars: { a: 1 } }\n".into(),
            true,
        ),
        (
            "an unknown transport",
            "inventory",
            "clients:\n  acme:\n    hosts:\n      - { name: h1, address: 127.0.0.1, os: linux, transport: telnet }\n".into(),
            false,
        ),
        (
            "a host without a name",
            "inventory",
            "clients:\n  acme:\n    hosts:\n      - { address: 127.0.0.1, os: linux }\n".into(),
            false,
        ),
        (
            "an unknown winrm auth",
            "inventory",
            "clients:\n  acme:\n    winrm: { auth: kerberos }\n    hosts:\n      - { name: h1, address: 127.0.0.1, os: windows }\n".into(),
            false,
        ),
    ];

    let scratch = Scratch::new();
    scratch.write("steps.yml", "- run: echo included\n");
    scratch.write("phases.yml", "- name: included\n  steps: []\n");
    let mut batch = Vec::new();
    let mut loader = Vec::new();
    for (what, kind, text, _) in &cases {
        let (playbook, inventory) = match *kind {
            "playbook" => (text.as_str(), GOOD_INVENTORY),
            _ => (GOOD_PLAYBOOK, text.as_str()),
        };
        scratch.write("p.yml", playbook);
        scratch.write("i.yml", inventory);
        let run = scratch.orchestrate(&["validate", "p.yml", "-i", "i.yml"]);
        loader.push(run.code == 0);
        batch.push((what.to_string(), *kind, yaml_to_json(text)));
    }
    let results = validate(&batch);
    let mut disagree = Vec::new();
    for ((what, _, _, valid), loads) in cases.iter().zip(loader) {
        let errors = results[*what].as_array().unwrap();
        let schema_valid = errors.is_empty();
        if schema_valid != *valid || loads != *valid {
            disagree.push(format!(
                "{what}: meant {}, the schema says {} {errors:?}, the loader says {}",
                if *valid { "valid" } else { "invalid" },
                if schema_valid { "valid" } else { "invalid" },
                if loads { "valid" } else { "invalid" },
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
