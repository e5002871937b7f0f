//! Benchmark (not a test): the controller's peak memory when an endpoint
//! prints a lot and when a large file goes to many hosts at once.
//!
//! 1. One SSH host, one step printing 200 MB (`yes | head -c 200000000`).
//! 2. A 200 MB file uploaded to 50 SSH hosts at once (`--forks 50`).
//!
//! Both over the test harness's real sshd fleet on 127.0.0.0/8, with the
//! release binary run as a child; wall time, CPU and peak RSS are that
//! child's (`wait4`), printed with the machine's load average (1 minute)
//! when it ended. The 50 hosts are one machine here, so they all upload to
//! the same path: each sends every byte and writes its own temporary copy
//! beside the destination (renamed over it once checked), so the disk must
//! hold HOSTS copies at once; the run checks that there is room first.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench_memory -- [OUTPUT_MB] [UPLOAD_MB] [HOSTS]
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::sshd::SshdEnv;
use support::wait_measured;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let output_mb = args.first().copied().unwrap_or(200);
    let upload_mb = args.get(1).copied().unwrap_or(200);
    let hosts = args.get(2).copied().unwrap_or(50) as usize;
    // ORCHESTRATE_BIN: another build (a debug one, to try the benchmark out).
    let binary = std::env::var_os("ORCHESTRATE_BIN")
        .map(|p| std::fs::canonicalize(p).expect("ORCHESTRATE_BIN exists"))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/orchestrate")
        });
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release"
    );
    println!("| what | hosts | wall | CPU (user+sys) | peak RSS | load | result |");
    println!("|------|------:|-----:|---------------:|---------:|-----:|--------|");
    output_flood(&binary, output_mb);
    upload_to_many(&binary, upload_mb, hosts);
}

fn output_flood(binary: &Path, mb: u64) {
    let env = SshdEnv::new();
    let (_servers, fleet) = env.fleet(1);
    env.trust(&fleet);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inventory.yml"),
        env.inventory(&fleet, |i| format!("b{i:03}")),
    )
    .unwrap();
    let bytes = mb * 1_000_000;
    std::fs::write(
        dir.path().join("playbook.yml"),
        format!(
            "name: flood\nphases:\n  - name: precheck\n    steps:\n      - name: print\n        check_safe: true\n        sh: yes | head -c {bytes}\n"
        ),
    )
    .unwrap();
    measure(
        binary,
        dir.path(),
        &format!("{mb} MB of output from one step"),
        1,
    );
}

fn upload_to_many(binary: &Path, mb: u64, hosts: usize) {
    let env = SshdEnv::new();
    let (_servers, fleet) = env.fleet(hosts);
    env.trust(&fleet);
    let dir = tempfile::tempdir().unwrap();
    let installer = dir.path().join("installer.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&installer).unwrap());
        let block: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..mb {
            file.write_all(&block).unwrap();
        }
    }
    // The hosts are one machine here: all write the same destination, each
    // through a temporary copy of its own beside it, so while they upload
    // the disk holds one copy per host; afterwards, one.
    let sink = env.dir().join("sinks");
    std::fs::create_dir_all(&sink).unwrap();
    env.give(&sink);
    let needed = mb * 1_000_000 * hosts as u64;
    let free = free_bytes(&sink);
    assert!(
        free > needed + (1 << 30),
        "{} holds {} MB free; {hosts} copies of {mb} MB at once need {} MB, and 1 GiB to spare",
        sink.display(),
        free / 1_000_000,
        needed / 1_000_000
    );
    std::fs::write(
        dir.path().join("inventory.yml"),
        env.inventory(&fleet, |i| format!("u{i:03}")),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("playbook.yml"),
        format!(
            "name: upload\nconcurrency: {hosts}\nphases:\n  - name: install\n    steps:\n      - name: send\n        upload: {{ src: installer.bin, dest: \"{}/installer.bin\", mode: \"0600\" }}\n",
            sink.display()
        ),
    )
    .unwrap();
    measure(
        binary,
        dir.path(),
        &format!("{mb} MB upload to {hosts} hosts at once"),
        hosts,
    );
    let _ = std::fs::remove_dir_all(&sink);
}

/// Bytes an unprivileged user may still write on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c.as_ptr(), &mut stat) },
        0,
        "statvfs"
    );
    stat.f_bavail as u64 * stat.f_frsize as u64
}

fn measure(binary: &Path, dir: &Path, what: &str, hosts: usize) {
    let started = Instant::now();
    let child = Command::new(binary)
        .args([
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--forks",
            &hosts.to_string(),
            "--format",
            "json",
        ])
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("report.json")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, usage) = wait_measured(child);
    let wall = started.elapsed();
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    // The machine is shared: its load says what the wall time is worth.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| {what} | {hosts} | {:.1} s | {:.1} s | {} MiB | {} | {} |",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        usage.ru_maxrss / 1024,
        load.split_whitespace().next().unwrap_or("?"),
        if status.success() {
            "all succeeded"
        } else {
            "FAILED"
        }
    );
    if !status.success() {
        let report = std::fs::read_to_string(dir.join("report.json")).unwrap_or_default();
        println!("{}", &report[..report.len().min(3000)]);
    }
}
