//! Benchmark (not a test): the journal on SQLite and on PostgreSQL, side by
//! side: the latency of one event's commit, and a whole `orchestrate run`
//! of 1,000 `local` hosts journaled in each.
//!
//! PostgreSQL is the test suite's private server (`tests/it/support/
//! postgres.rs`: Debian's PostgreSQL on a loopback port, `fsync` off, as
//! `scripts/deps/postgres.sh` sets it up), so the numbers are the journal's
//! own cost plus a loopback round trip, not a disk's.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_journal -- [EVENTS] [HOSTS]
//! # HOSTS 0: the latency alone
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orchestrate::journal::{Journal, Location, RunRow};
use orchestrate::run::{Event, StepRecord, StepStatus};

const PLAYBOOK: &str = r#"name: benchmark
waves: [1, "10%", "100%"]
failure_budget: "10%"
concurrency: 100
phases:
  - name: precheck
    steps:
      - name: detect
        sh: echo kesl
        capture: { as: product }
  - name: uninstall
    steps:
      - name: remove
        sh: echo removing {{ product }}
        marks: protection_off
  - name: install
    steps:
      - name: install
        sh: echo installed
        marks: protection_on
"#;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(2000);
    let hosts = args.get(1).copied().unwrap_or(1000);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let binary =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/{profile}/orchestrate"));
    assert!(binary.exists(), "build the {profile} binary first");
    let server = support::postgres::server();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("state.db").display().to_string();

    println!("journal write latency per event ({events} events, {profile} build)\n");
    println!("| journal | mean | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, state) in [
        ("SQLite", sqlite.clone()),
        ("PostgreSQL", server.database()),
    ] {
        latency(name, &state, events, &server.passfile);
    }

    if hosts == 0 {
        return;
    }
    println!(
        "\n`orchestrate run` over {hosts} local hosts, 3 steps each, waves [1, 10%, 100%], --forks 100\n"
    );
    println!("| journal | wall | CPU (user+sys) | events journaled |");
    println!("|---|---:|---:|---:|");
    let work = tempfile::tempdir().unwrap();
    write_fleet(work.path(), hosts);
    for (name, state) in [
        ("SQLite", work.path().join("run.db").display().to_string()),
        ("PostgreSQL", server.database()),
    ] {
        whole_run(name, &binary, work.path(), &state, &server.passfile);
    }
}

fn open(state: &str, passfile: &Path) -> Journal {
    // SAFETY: set before any thread of ours reads the environment.
    unsafe { std::env::set_var("PGPASSFILE", passfile) };
    let location = Location::parse(Path::new(state)).unwrap();
    Journal::open(&location).unwrap()
}

fn latency(name: &str, state: &str, events: usize, passfile: &Path) {
    let journal = open(state, passfile);
    let run_id = format!("bench-{}", std::process::id());
    journal
        .start_run(&RunRow {
            run_id: run_id.clone(),
            playbook: "p.yml".into(),
            inventory: "i.yml".into(),
            playbook_sha256: String::new(),
            inventory_sha256: String::new(),
            options: serde_json::json!({}),
            status: None,
            started_at: orchestrate::run::now(),
            finished_at: None,
        })
        .unwrap();
    let mut times = Vec::with_capacity(events);
    for i in 0..events {
        // A step's end: the biggest event, with a row in `steps` too.
        let event = Event::StepFinished {
            client: "acme".into(),
            host: format!("h{}", i % 100),
            step: StepRecord {
                phase: "uninstall".into(),
                name: "remove".into(),
                index: i % 7,
                status: StepStatus::Ok,
                exit_code: Some(0),
                attempts: 1,
                duration_ms: 12,
                detail: None,
                stdout: Some("removed Kaspersky Endpoint Security 12.1".into()),
                stderr: Some(String::new()),
                check_safe: false,
                capture: None,
            },
        };
        let started = Instant::now();
        journal
            .append(&run_id, &orchestrate::run::now(), &event)
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "| {name} | {} | {} | {} | {} |",
        ms(mean),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*times.last().unwrap())
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn write_fleet(dir: &Path, hosts: usize) {
    let mut text = String::from("clients:\n  acme:\n    hosts:\n");
    for i in 0..hosts {
        text.push_str(&format!(
            "      - {{ name: h{i:04}, address: 127.0.0.1, os: linux, transport: local }}\n"
        ));
    }
    std::fs::write(dir.join("inventory.yml"), text).unwrap();
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).unwrap();
}

fn whole_run(name: &str, binary: &PathBuf, dir: &Path, state: &str, passfile: &Path) {
    let started = Instant::now();
    let child = Command::new(binary)
        .args([
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--forks",
            "100",
            "--state",
            state,
        ])
        .current_dir(dir)
        .env("PGPASSFILE", passfile)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, usage) = support::wait_measured(child);
    let wall = started.elapsed();
    assert!(status.success(), "{name}: the run failed ({status})");
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let journal = open(state, passfile);
    let run = journal.runs().unwrap().remove(0);
    let events = journal.events(&run.run_id).unwrap().len();
    println!(
        "| {name} | {:.2} s | {:.2} s | {events} |",
        wall.as_secs_f64(),
        cpu(usage.ru_utime) + cpu(usage.ru_stime)
    );
}
