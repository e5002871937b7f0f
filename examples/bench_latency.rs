//! Benchmark (not a test): what a round-trip time costs one host. One real
//! sshd host behind the test harness's TCP proxy, which delays every byte
//! by RTT/2 each way (`Proxy::set_rtt`); the SSH transport connects and
//! runs N steps (`true`) one after another, as a host's run does. Each
//! figure is the median of several repetitions, in milliseconds and in
//! round trips, beside the physical floor: the connection's setup, then
//! one round trip per step (the request goes, the exit status comes back).
//! OpenSSH's own client through the same proxy (`ssh HOST true`: setup and
//! one command) is measured too, for the setup a mature client needs.
//!
//! Needs what the SSH tests need (`scripts/deps/ssh.sh`).
//!
//! ```sh
//! cargo run --release --example bench_latency -- [RTT_MS] [STEPS...]
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrate::transport::ssh::SshConnector;
use orchestrate::transport::{Command, Connector, ExitStatus, Script};
use support::proxy::Proxy;
use support::sshd::{ClientKey, SshdEnv};

const REPEAT: usize = 5;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ssh -p PORT USER@ADDRESS true` through the proxy, with this env's key
/// and known_hosts, and the key exchange the rest of the benchmarks use.
fn openssh_true(env: &SshdEnv, proxy: &Proxy) -> Duration {
    let host = proxy.host();
    let started = Instant::now();
    let status = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "KexAlgorithms=curve25519-sha256"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", env.known_hosts.display()))
        .arg("-i")
        .arg(env.key(ClientKey::Ed25519))
        .args(["-p", &host.port.to_string()])
        .arg(format!("{}@{}", env.user(), host.address))
        .arg("true")
        .status()
        .expect("ssh runs");
    assert!(status.success(), "ssh through the proxy");
    started.elapsed()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rtt = Duration::from_millis(
        args.next()
            .map(|a| a.parse().expect("RTT in ms"))
            .unwrap_or(50),
    );
    let mut steps: Vec<usize> = args.map(|a| a.parse().expect("steps")).collect();
    if steps.is_empty() {
        steps = vec![1, 5, 20];
    }
    let env = SshdEnv::new();
    let server = env.server(1);
    let proxy = Proxy::start(&server.host());
    env.trust(&[proxy.host()]);
    proxy.set_rtt(rtt);
    let round_trips = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();

    let openssh = median((0..REPEAT).map(|_| openssh_true(&env, &proxy)).collect());
    println!(
        "RTT {} ms; OpenSSH `ssh HOST true` (setup and one command): {:.0} ms = {:.1} RTT",
        rtt.as_millis(),
        ms(openssh),
        round_trips(openssh)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let connector = Arc::new(SshConnector::with_agent(None));
    let target = env.target("bench", &proxy.host());
    println!(
        "steps | connect          | steps total       | per step          | host total | floor (connect + N RTT)"
    );
    for n in steps {
        let mut connects = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..REPEAT {
            let (connect, total) = runtime.block_on(async {
                let started = Instant::now();
                let session = connector.connect(&target).await.expect("connects");
                let connect = started.elapsed();
                let started = Instant::now();
                for _ in 0..n {
                    let done = session
                        .execute(&Command::new(Script::Sh("true".into())), None)
                        .await
                        .expect("runs");
                    assert_eq!(done.status, ExitStatus::Code(0));
                }
                let total = started.elapsed();
                session.close().await;
                (connect, total)
            });
            connects.push(connect);
            totals.push(total);
        }
        let (connect, total) = (median(connects), median(totals));
        let per_step = total / n as u32;
        let floor = connect + rtt * n as u32;
        println!(
            "{n:>5} | {:>6.0} ms {:>4.1} RTT | {:>6.0} ms {:>5.1} RTT | {:>5.0} ms {:>4.2} RTT | {:>7.0} ms | {:>6.0} ms ({:.2}x)",
            ms(connect),
            round_trips(connect),
            ms(total),
            round_trips(total),
            ms(per_step),
            round_trips(per_step),
            ms(connect + total),
            ms(floor),
            (connect + total).as_secs_f64() / floor.as_secs_f64()
        );
    }
}
