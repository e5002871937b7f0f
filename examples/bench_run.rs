//! Benchmark (not a test): the whole tool, `orchestrate run`, with a
//! three-phase playbook over 100 and 250 loopback SSH hosts in three waves.
//!
//! It starts the sshd fleet of the test harness, writes an inventory and a
//! playbook, runs the release binary as a child process and reports that
//! child's wall time, CPU time and peak RSS (from `wait4`, so the sshd
//! servers, which share the same 2 cores, are not counted).
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_run -- [HOSTS...]
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::sshd::{ClientKey, SshdEnv};

const PLAYBOOK: &str = r#"name: benchmark
waves: [1, "10%", "100%"]
failure_budget: "10%"
concurrency: 250
phases:
  - name: precheck
    steps:
      - name: detect
        check_safe: true
        sh: echo kesl
        capture: { as: product }
  - name: uninstall
    steps:
      - name: remove
        sh: echo removing {{ product }} from {{ host.name }}
        marks: protection_off
  - name: install
    steps:
      - name: install
        sh: echo installed
        marks: protection_on
"#;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 250]
    } else {
        sizes
    };
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/orchestrate");
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release"
    );
    println!("| hosts | wall | CPU (user+sys) | peak RSS | result |");
    println!("|------:|-----:|---------------:|---------:|--------|");
    for hosts in sizes {
        let env = SshdEnv::new();
        let (_servers, fleet) = env.fleet(hosts);
        env.trust(&fleet);
        let dir = tempfile::tempdir().unwrap();
        let mut inventory = format!(
            "defaults:\n  user: {}\n  ssh: {{ identity_file: '{}', known_hosts: '{}' }}\nclients:\n  bench:\n    hosts:\n",
            env.user(),
            env.key(ClientKey::Ed25519).display(),
            env.known_hosts.display()
        );
        for (i, host) in fleet.iter().enumerate() {
            inventory.push_str(&format!(
                "      - {{ name: b{i:03}, address: {}, port: {}, os: linux }}\n",
                host.address, host.port
            ));
        }
        std::fs::write(dir.path().join("inventory.yml"), inventory).unwrap();
        std::fs::write(dir.path().join("playbook.yml"), PLAYBOOK).unwrap();

        let started = Instant::now();
        // Reaped by wait4 below, which also gives its resource usage.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(&binary)
            .args([
                "run",
                "playbook.yml",
                "-i",
                "inventory.yml",
                "--forks",
                "250",
                "--format",
                "json",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // SAFETY: wait4 on our own child, into a struct we own.
        let (status, usage) = unsafe {
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
            (status, usage)
        };
        let wall = started.elapsed();
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let cpu = time(usage.ru_utime) + time(usage.ru_stime);
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        println!(
            "| {hosts} | {:.2} s | {:.2} s | {} MiB | {} |",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            usage.ru_maxrss / 1024,
            if ok { "all succeeded" } else { "FAILED" }
        );
    }
}
