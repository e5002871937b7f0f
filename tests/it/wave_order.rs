//! The hosts of a wave start in inventory order (README: "hosts start in
//! the order the inventory lists them"), one at a time or several at once.

use crate::harness;

use harness::Scratch;
use serde_json::Value;

/// Runs six local hosts at `concurrency`; returns each host's start time
/// from the report, in inventory order.
fn start_times(concurrency: usize) -> Vec<(String, chrono::DateTime<chrono::FixedOffset>)> {
    let scratch = Scratch::new();
    let mut inventory = String::from("clients:\n  acme:\n    hosts:\n");
    for i in 1..=6 {
        inventory.push_str(&format!(
            "      - {{ name: h{i:02}, address: 127.0.0.1, os: linux, transport: local }}\n"
        ));
    }
    scratch.write("inventory.yml", &inventory);
    scratch.write(
        "playbook.yml",
        &format!(
            "name: order\nwaves: [\"100%\"]\nconcurrency: {concurrency}\nphases:\n  - name: p\n    steps:\n      - sh: sleep 0.1\n"
        ),
    );
    scratch
        .orchestrate(&[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "r.json",
        ])
        .expect_code(0);
    let report: Value = serde_json::from_str(&scratch.read("r.json")).unwrap();
    report["clients"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let started = h["started_at"].as_str().unwrap();
            (
                h["name"].as_str().unwrap().to_string(),
                chrono::DateTime::parse_from_rfc3339(started).unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_host_at_a_time_starts_them_in_inventory_order() {
    let times = start_times(1);
    let names: Vec<&str> = times.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["h01", "h02", "h03", "h04", "h05", "h06"]);
    for pair in times.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "{} started after {}: {times:?}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[test]
fn two_hosts_at_a_time_start_them_in_inventory_order() {
    let times = start_times(2);
    // Two start together; each later host waits for one of the two before
    // it, so it starts after every host listed two or more places earlier.
    for (i, (early, at)) in times.iter().enumerate() {
        for (late, later_at) in times.iter().skip(i + 2) {
            assert!(at < later_at, "{late} started before {early}: {times:?}");
        }
    }
}
