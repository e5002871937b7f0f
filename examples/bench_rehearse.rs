//! The controller at scale, on the fleet simulator: `orchestrate rehearse`
//! of the Windows KES → Defender playbook (its real steps and captures)
//! over 1,000, 3,000 and 10,000 simulated endpoints in 50 clients, with
//! `--forks 1000`, msiexec 3010 and its reboot on one host in ten (the
//! shipped scenario) and 2 % of hosts failing in `install`, so rolled back.
//!
//! Run with `cargo run --release --example bench_rehearse [--forks N]
//! [SIZES...]` (default: `--forks 1000`, sizes 1000 3000 10000). A smaller
//! `--forks` holds concurrency equal across sizes, which tells growth with
//! the fleet's size from growth with the number of hosts at once: at 1,000
//! endpoints (20 a client, waves of 1, 10 %, 50 % and the rest) at most
//! 500 hosts run at once, at 10,000 all 1,000 forks are busy. Each size
//! runs the release binary as a child and records its wall time, CPU time
//! (user + system) and peak resident memory from `wait4`, and the hosts' outcomes from its JSON report. The
//! simulator runs inside the same process (its own runtime), so the
//! figures are the controller's and the simulated fleet's together: an
//! upper bound on the controller's.

use std::path::{Path, PathBuf};
use std::time::Instant;

const CLIENTS: usize = 50;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let forks = match args.iter().position(|a| a == "--forks") {
        Some(at) => {
            let value = args.get(at + 1).cloned().expect("--forks takes a number");
            args.drain(at..at + 2);
            value
        }
        None => "1000".to_string(),
    };
    forks.parse::<usize>().expect("--forks takes a number");
    let sizes: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("a size is a number of hosts"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 3_000, 10_000]
    } else {
        sizes
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = repo.join("target/release/orchestrate");
    assert!(
        binary.exists(),
        "build it first: cargo build --release (then run this example with --release too)"
    );
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.yml");
    let shipped =
        std::fs::read_to_string(repo.join("scenarios/windows-kes-to-defender.yml")).unwrap();
    std::fs::write(
        &scenario,
        shipped
            .replace("rtt: 2ms", "rtt: 0ms\nfail_rates: { install: 0.02 }")
            .replace("reboot_takes: 90s", "reboot_takes: 5s"),
    )
    .unwrap();
    println!("--forks {forks}");
    println!(
        "| endpoints | wall s | CPU s | CPU ms per host | peak MiB | KiB per host | succeeded | failed | other |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for size in sizes {
        let inventory = dir.path().join(format!("inventory-{size}.yml"));
        std::fs::write(&inventory, inventory_text(size)).unwrap();
        let state = dir.path().join(format!("rehearsal-{size}.db"));
        let report = dir.path().join(format!("report-{size}.json"));
        let (wall, cpu, peak_kib) = measure(
            &binary,
            &[
                "rehearse".as_ref(),
                repo.join("playbooks/windows-kes-to-defender.yml")
                    .as_os_str(),
                "-i".as_ref(),
                inventory.as_os_str(),
                "--scenario".as_ref(),
                scenario.as_os_str(),
                "--time-scale".as_ref(),
                "0.0001".as_ref(),
                "--forks".as_ref(),
                forks.as_ref(),
                "--yes".as_ref(),
                "--state".as_ref(),
                state.as_os_str(),
                "--report-json".as_ref(),
                report.as_os_str(),
            ],
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let statuses: Vec<String> = report["clients"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["hosts"].as_array().unwrap())
            .map(|h| h["status"].as_str().unwrap().to_string())
            .collect();
        let of = |s: &str| statuses.iter().filter(|x| *x == s).count();
        let (ok, failed) = (of("succeeded"), of("failed"));
        println!(
            "| {size} | {wall:.1} | {cpu:.1} | {:.2} | {:.0} | {:.1} | {ok} | {failed} | {} |",
            cpu * 1000.0 / size as f64,
            peak_kib as f64 / 1024.0,
            peak_kib as f64 / size as f64,
            statuses.len() - ok - failed
        );
    }
}

/// `size` Windows hosts in 50 clients of equal size.
fn inventory_text(size: usize) -> String {
    let mut text = String::from("defaults:\n  transport: winrm\n  user: msp-admin\nclients:\n");
    for client in 0..CLIENTS {
        text.push_str(&format!("  client{client:02}:\n    hosts:\n"));
        for n in (client..size).step_by(CLIENTS) {
            text.push_str(&format!(
                "      - {{ name: ws{n:05}, address: 10.{}.{}.{}, os: windows }}\n",
                n >> 16,
                (n >> 8) & 0xff,
                n & 0xff
            ));
        }
    }
    text
}

/// Runs `binary` with `args`; its wall time, CPU seconds and peak RSS (KiB).
fn measure(binary: &Path, args: &[&std::ffi::OsStr]) -> (f64, f64, i64) {
    let started = Instant::now();
    // Reaped by the wait4 below, which also gives its resource usage
    // (std's `wait` would reap it without).
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(binary)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("orchestrate starts");
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid pointers to locals.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
        usage
    };
    let wall = started.elapsed().as_secs_f64();
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        wall,
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
        usage.ru_maxrss,
    )
}
