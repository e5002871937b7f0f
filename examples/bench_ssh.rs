//! Benchmark (not a test): N commands on each of 100 and 250 loopback hosts
//! over the SSH transport, all hosts at once, one connection per host.
//!
//! Prints wall time, the client's CPU time (user + system, this process
//! only: the sshd servers are not counted) and its peak RSS.
//! Needs what the SSH tests need (`scripts/deps/ssh.sh`).
//!
//! ```sh
//! cargo run --release --example bench_ssh -- [COMMANDS_PER_HOST] [HOSTS...]
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrate::transport::ssh::SshConnector;
use orchestrate::transport::{Command, Connector, ExitStatus, Script};
use support::sshd::SshdEnv;

fn cpu_and_rss() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        time(usage.ru_utime) + time(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

async fn round(env: &SshdEnv, hosts: usize, commands: usize) {
    let (_servers, fleet) = env.fleet(hosts);
    env.trust(&fleet);
    let connector = Arc::new(SshConnector::with_agent(None));
    let (cpu_before, _) = cpu_and_rss();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, host) in fleet.iter().enumerate() {
        let target = env.target(&format!("bench{i:03}"), host);
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await?;
            for step in 0..commands {
                let command = Command::new(Script::Sh(format!("echo {step} $(hostname)")));
                let done = session.execute(&command, None).await?;
                assert_eq!(done.status, ExitStatus::Code(0));
            }
            session.close().await;
            Ok::<_, orchestrate::transport::TransportError>(())
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if let Err(e) = task.await.expect("task") {
            failed += 1;
            eprintln!("{e}");
        }
    }
    let wall = started.elapsed();
    let (cpu_after, peak_rss_kib) = cpu_and_rss();
    println!(
        "{hosts:>4} hosts x {commands} commands: wall {:>6.2}s  client CPU {:>6.2}s  peak RSS {:>4} MiB  failed {failed}",
        wall.as_secs_f64(),
        (cpu_after - cpu_before).as_secs_f64(),
        peak_rss_kib / 1024
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let commands: usize = args
        .next()
        .map(|a| a.parse().expect("commands"))
        .unwrap_or(3);
    let mut sizes: Vec<usize> = args.map(|a| a.parse().expect("hosts")).collect();
    if sizes.is_empty() {
        sizes = vec![100, 250];
    }
    let env = SshdEnv::new();
    for hosts in sizes {
        round(&env, hosts, commands).await;
    }
}
