//! The SSH transport against real OpenSSH servers on loopback (see
//! `tests/it/support/sshd.rs`): parallel fleets, authentication methods, host
//! key policies, SFTP, timeouts, hosts going down, reboots, jump hosts.

use crate::support;

mod keys;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrate::transport::ssh::{KeyscanStatus, SshConnector};
use orchestrate::transport::{
    Command, Connector, ExitStatus, HostKeyPolicy, OutputSink, Script, Secret, Session, Target,
    TransportError,
};
use support::sshd::{ClientKey, PASSPHRASE, SshdEnv, process_alive};
use support::upload_source;

fn sh(text: &str) -> Command {
    Command::new(Script::Sh(text.to_string()))
}

fn no_agent() -> SshConnector {
    SshConnector::with_agent(None)
}

async fn run(session: &dyn Session, text: &str) -> (ExitStatus, String) {
    let done = session.execute(&sh(text), None).await.expect("execute");
    (
        done.status,
        String::from_utf8_lossy(&done.stdout).into_owned(),
    )
}

fn err_text<T>(result: Result<T, TransportError>) -> (TransportError, String) {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_60_hosts_runs_3_steps_each_over_one_connection_per_host() {
    let env = SshdEnv::new();
    let (_servers, hosts) = env.fleet(60);
    env.trust(&hosts);
    let connector = Arc::new(no_agent());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let mut target = env.target(&format!("host{i:02}"), host);
        // 60 handshakes at once (sshd starts a process for each) took over
        // the default 10 s on a 2-core machine at a load of 24; what is
        // tested is one connection per host carrying its steps.
        target.connect_timeout = Duration::from_secs(60);
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await?;
            let mut parents = Vec::new();
            for step in 0..3 {
                let text = format!("echo step{step} {}; echo $PPID >&2", target.address);
                let done = session.execute(&sh(&text), None).await?;
                assert_eq!(done.status, ExitStatus::Code(0));
                assert_eq!(
                    String::from_utf8_lossy(&done.stdout),
                    format!("step{step} {}\n", target.address)
                );
                parents.push(String::from_utf8_lossy(&done.stderr).trim().to_string());
            }
            session.close().await;
            Ok::<_, TransportError>(parents)
        }));
    }
    for task in tasks {
        let parents = task.await.unwrap().expect("host ran its steps");
        // Every step's shell is a child of the same sshd connection process.
        assert!(parents.iter().all(|p| p == &parents[0]), "{parents:?}");
    }
    // The hosts at once, not one after the other (a loaded machine's
    // handshakes alone can take a minute).
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_keeps_the_mode_and_remove_deletes() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let session = no_agent()
        .connect(&env.target("files", &server.host()))
        .await
        .unwrap();
    let path = session.temp_path("script.sh");
    assert!(path.starts_with("/tmp/orchestrate-"), "{path}");
    let body = b"#!/bin/sh\necho uploaded \"$@\"\n".to_vec();
    session
        .upload(&upload_source(&body), &path, 0o750)
        .await
        .expect("upload");
    let (status, out) = run(&*session, &format!("stat -c %a {path}; {path} ok")).await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out, "750\nuploaded ok\n");
    // Larger than one SFTP packet, and overwritten in place.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    session
        .upload(&upload_source(&big), &path, 0o600)
        .await
        .expect("upload big");
    let (_, out) = run(&*session, &format!("stat -c '%a %s' {path}")).await;
    assert_eq!(out, "600 300000\n");
    session.remove(&path).await.expect("remove");
    let (status, _) = run(&*session, &format!("test -e {path}")).await;
    assert_eq!(status, ExitStatus::Code(1));
    // Gone already is as good as removed (`rm -f`): a cut upload's copy
    // may never have been created.
    session
        .remove(&path)
        .await
        .expect("removing what is not there is no error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_exit_codes_signals_and_streamed_output() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let session = no_agent()
        .connect(&env.target("io", &server.host()))
        .await
        .unwrap();
    let mut command = sh("wc -c; cat >/dev/null");
    let input: Vec<u8> = vec![b'x'; 1_000_000];
    command.stdin = Some(input);
    let done = session.execute(&command, None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "1000000");

    let mut command = sh("tr a-z A-Z");
    command.stdin = Some(b"hello stdin".to_vec());
    let done = session.execute(&command, None).await.unwrap();
    assert_eq!(done.stdout, b"HELLO STDIN");

    let (status, _) = run(&*session, "echo before; exit 3").await;
    assert_eq!(status, ExitStatus::Code(3));
    let (status, _) = run(&*session, "kill -TERM $$").await;
    assert_eq!(status, ExitStatus::Signal("TERM".into()));

    let (sink, mut chunks) = OutputSink::channel();
    let done = session
        .execute(&sh("echo out; echo err >&2"), Some(sink))
        .await
        .unwrap();
    assert_eq!(
        (&done.stdout[..], &done.stderr[..]),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let mut streamed = Vec::new();
    while let Ok(chunk) = chunks.try_recv() {
        streamed.push((chunk.stream, chunk.data));
    }
    assert_eq!(streamed.len(), 2, "{streamed:?}");

    // Script kinds: PowerShell needs Windows or pwsh; cmd needs Windows.
    let cmd = session
        .execute(&Command::new(Script::Cmd("dir".into())), None)
        .await;
    assert!(matches!(cmd, Err(TransportError::Unsupported(_))));
    let (status, out) = {
        let done = session
            .execute(&Command::new(Script::Default("echo default".into())), None)
            .await
            .unwrap();
        (
            done.status,
            String::from_utf8_lossy(&done.stdout).into_owned(),
        )
    };
    assert_eq!((status, out.as_str()), (ExitStatus::Code(0), "default\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_remote_process_group() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let session = no_agent()
        .connect(&env.target("slow", &server.host()))
        .await
        .unwrap();
    let mut command = sh("sleep 300 & echo $!; wait");
    command.timeout = Some(Duration::from_millis(1500));
    let started = Instant::now();
    let done = session.execute(&command, None).await.unwrap();
    assert_eq!(done.status, ExitStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(6));
    let pid: i32 = String::from_utf8_lossy(&done.stdout)
        .trim()
        .parse()
        .expect("the sleep's pid");
    let deadline = Instant::now() + Duration::from_secs(3);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the remote sleep {pid} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The session goes on.
    assert_eq!(run(&*session, "echo still here").await.1, "still here\n");

    // A step the runner gives up on (its future dropped) is killed as well.
    let pid_file = env.dir().join("dropped.pid");
    let text = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let dropped = sh(&text);
    let gave_up = tokio::time::timeout(Duration::from_millis(800), session.execute(&dropped, None));
    assert!(gave_up.await.is_err());
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_gone(pid);
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(4);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "remote process {pid} survived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fallback for servers that ignore the `signal` request (OpenSSH < 7.9):
/// every command's shell carries a marker on its command line (the session's
/// first command: number 0), and its process group is killed from a second
/// channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_commands_can_be_killed_from_another_channel() {
    use orchestrate::transport::ssh::exec::{kill_marked, marker};
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let session: Arc<dyn Session> = no_agent()
        .connect(&env.target("marked", &server.host()))
        .await
        .unwrap()
        .into();
    let token = marker(std::process::id(), 0);
    let marked = sh("sleep 300 & echo $!; wait");
    let running = {
        let session = session.clone();
        tokio::spawn(async move { session.execute(&marked, None).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _) = run(&*session, &kill_marked(&token)).await;
    assert_eq!(
        status,
        ExitStatus::Code(0),
        "the killer must not kill itself"
    );
    let done = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the marked command ended")
        .unwrap()
        .unwrap();
    assert_eq!(done.status, ExitStatus::Signal("KILL".into()));
    let pid: i32 = String::from_utf8_lossy(&done.stdout)
        .trim()
        .parse()
        .unwrap();
    wait_gone(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_capped_below_max_sessions() {
    let env = SshdEnv::new();
    let default_limit = env.server_with(1, 10);
    let tight = env.server_with(1, 2);
    env.trust(&default_limit.hosts());
    env.trust(&tight.hosts());
    let connector = no_agent();
    // 20 steps at once on one connection to a MaxSessions 10 host: they queue.
    let session: Arc<dyn Session> = connector
        .connect(&env.target("busy", &default_limit.host()))
        .await
        .unwrap()
        .into();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            session
                .execute(&sh(&format!("sleep 0.2; echo {i}")), None)
                .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let done = task.await.unwrap().expect("queued step");
        assert_eq!(String::from_utf8_lossy(&done.stdout), format!("{i}\n"));
    }
    // A host allowing fewer sessions than the cap: steps wait for a free slot...
    let session: Arc<dyn Session> = connector
        .connect(&env.target("tight", &tight.host()))
        .await
        .unwrap()
        .into();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            session.execute(&sh("sleep 0.4; echo ok"), None).await
        }));
    }
    for task in tasks {
        assert_eq!(
            task.await.unwrap().expect("waited for a slot").stdout,
            b"ok\n"
        );
    }
    // ... but not past the step's own time: a slot held longer than that
    // gives a clear error.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let session = session.clone();
            tokio::spawn(async move { session.execute(&sh("sleep 5"), None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = sh("true");
    quick.timeout = Some(Duration::from_secs(1));
    let (e, text) = err_text(session.execute(&quick, None).await);
    assert!(matches!(e, TransportError::Other(_)), "{e:?}");
    assert!(
        text.contains("MaxSessions") && text.contains("host tight"),
        "{text}"
    );
    for hog in hogs {
        hog.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_going_down_mid_command_fails_alone() {
    let env = SshdEnv::new();
    let (_servers, hosts) = env.fleet(4);
    let victim = env.server(1);
    env.trust(&hosts);
    env.trust(&victim.hosts());
    let connector = Arc::new(no_agent());
    let mut tasks = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let target = env.target(&format!("ok{i}"), host);
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await?;
            session.execute(&sh("sleep 1.5; echo done"), None).await
        }));
    }
    let target = env.target("victim", &victim.host());
    let session = connector.connect(&target).await.unwrap();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.stop();
    };
    let long = sh("sleep 5; echo never");
    let (result, ()) = tokio::join!(session.execute(&long, None), killer);
    let (e, text) = err_text(result);
    assert!(matches!(e, TransportError::ConnectionLost(_)), "{e:?}");
    assert!(text.contains("host victim"), "{text}");
    for task in tasks {
        let done = task.await.unwrap().expect("other hosts finish");
        assert_eq!(done.stdout, b"done\n");
    }
    // Now it is down: connecting says unreachable.
    let (e, _) = err_text(connector.connect(&target).await);
    assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
    let (e, _) = err_text(session.execute(&sh("true"), None).await);
    assert!(matches!(e, TransportError::ConnectionLost(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_and_refused_connections_are_unreachable() {
    let env = SshdEnv::new();
    // Accepts TCP but never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = support::sshd::Host {
        address: "127.0.0.1".into(),
        port: silent.local_addr().unwrap().port(),
        host_key: String::new(),
    };
    let mut target = env.target("silent", &host);
    target.connect_timeout = Duration::from_millis(800);
    let started = Instant::now();
    let (e, text) = err_text(no_agent().connect(&target).await);
    assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
    assert!(text.contains("connect timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
    let (e, text) = err_text(no_agent().connect(&target).await);
    assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
    assert!(text.contains("refused"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_waits_for_the_host_and_reconnects() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let mut target = env.target("rebooter", &server.host());
    target.reboot_command = Some(server.reboot_command());
    let session = no_agent().connect(&target).await.unwrap();
    let (_, before) = run(&*session, "echo $PPID").await;
    let file = env.dir().join("before-reboot").display().to_string();
    session
        .upload(&upload_source(b"x"), &file, 0o644)
        .await
        .unwrap();
    let started = Instant::now();
    session
        .reboot(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, after) = run(&*session, "echo $PPID").await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_ne!(before, after, "a new connection after the reboot");
    // SFTP reopens on the new connection too.
    session
        .upload(&upload_source(b"y"), &file, 0o644)
        .await
        .unwrap();
    session.remove(&file).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_back_from_reboot_with_another_key_is_refused() {
    let env = SshdEnv::new();
    let mut server = env.server(1);
    env.trust(&server.hosts());
    let mut target = env.target("reinstalled", &server.host());
    // The "reboot" here is the test replacing the server under the session.
    target.reboot_command = Some("true".into());
    let session = no_agent().connect(&target).await.unwrap();
    let swap = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.change_host_key();
    };
    let (result, ()) = tokio::join!(session.reboot(Duration::from_secs(10)), swap);
    let (e, text) = err_text(result);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
    assert!(text.contains("CHANGED"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_behind_one_shared_jump_host() {
    let env = SshdEnv::new();
    let jump = env.server(1);
    let inner = env.server(5);
    env.trust(&jump.hosts());
    env.trust(&inner.hosts());
    let spec = jump.host().jump_spec(env.user());
    let connector = Arc::new(no_agent());
    let mut tasks = Vec::new();
    for (i, host) in inner.hosts().iter().enumerate() {
        let mut target = env.target(&format!("behind{i}"), host);
        target.ssh.jump_host = Some(spec.clone());
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await?;
            let mut outputs = Vec::new();
            for _ in 0..2 {
                let done = session.execute(&sh("echo $SSH_CONNECTION"), None).await?;
                outputs.push(String::from_utf8_lossy(&done.stdout).into_owned());
            }
            Ok::<_, TransportError>(outputs)
        }));
    }
    for task in tasks {
        let outputs = task.await.unwrap().expect("through the jump host");
        // The inner sshd sees the jump host's loopback tunnel, not us directly.
        assert!(outputs[0].starts_with("127.0.0.1 "), "{outputs:?}");
    }
    let log = jump.log();
    assert_eq!(
        log.matches("Accepted publickey").count(),
        1,
        "one shared jump connection:\n{log}"
    );

    // keyscan goes through the jump host too.
    let stranger_inner = env.server(1);
    let mut target = env.target("scan-behind", &stranger_inner.host());
    target.ssh.jump_host = Some(spec.clone());
    let outcomes = connector.keyscan(std::slice::from_ref(&target), 4).await;
    assert!(
        matches!(
            outcomes[0].status,
            KeyscanStatus::New {
                recorded: Ok(()),
                ..
            }
        ),
        "{outcomes:?}"
    );

    // The jump host's own key is verified like any host's.
    let mut target = env.target("behind-bad-jump", &inner.host());
    let stranger = env.server(1);
    target.ssh.jump_host = Some(stranger.host().jump_spec(env.user()));
    let (e, text) = err_text(no_agent().connect(&target).await);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
    assert!(text.contains("jump host"), "{text}");
    let outcomes = no_agent().keyscan(&[target], 4).await;
    match &outcomes[0].status {
        KeyscanStatus::Unreachable(why) => assert!(why.contains("jump host"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_closes_its_connection() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let connector = no_agent();
    for with_sftp in [false, true] {
        let before = server.log().matches("Disconnected from user").count()
            + server.log().matches("Connection closed by").count();
        let session = connector
            .connect(&env.target("dropped", &server.host()))
            .await
            .unwrap();
        run(&*session, "true").await;
        if with_sftp {
            let file = env.dir().join("dropped").display().to_string();
            session
                .upload(&upload_source(b"x"), &file, 0o600)
                .await
                .unwrap();
        }
        drop(session);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = server.log();
            let now = log.matches("Disconnected from user").count()
                + log.matches("Connection closed by").count();
            if now > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sftp={with_sftp}: still connected:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_gone_silent_mid_command_is_detected_by_keepalives() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let connector = no_agent().with_keepalive(Duration::from_millis(300), 2);
    let session = connector
        .connect(&env.target("frozen", &server.host()))
        .await
        .unwrap();
    let long = sh("sleep 30");
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.freeze();
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(session.execute(&long, None), freeze);
    server.thaw();
    let (e, text) = err_text(result);
    assert!(matches!(e, TransportError::ConnectionLost(_)), "{e:?}");
    assert!(text.contains("host frozen"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Over a slow link no step waits a round trip for its channel to open:
/// the next step's channel is opened while a step runs. A step then costs
/// about 2.5 round trips (exec to exit status, and what sshd holds back:
/// see BENCHMARKS.md, "Latency"), where opening its channel first made 3.5.
#[test]
fn over_a_slow_link_no_step_waits_for_its_channel_to_open() {
    let env = SshdEnv::new();
    let server = env.server(1);
    let proxy = support::proxy::Proxy::start(&server.host());
    env.trust(&[proxy.host()]);
    let rtt = Duration::from_millis(200);
    proxy.set_rtt(rtt);
    let target = env.target("slow", &proxy.host());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_step = runtime.block_on(async {
        let session = no_agent().connect(&target).await.expect("connects");
        assert_eq!(run(&*session, "true").await.0, ExitStatus::Code(0));
        let started = Instant::now();
        for _ in 0..4 {
            assert_eq!(run(&*session, "true").await.0, ExitStatus::Code(0));
        }
        let per_step = started.elapsed() / 4;
        session.close().await;
        per_step
    });
    assert!(per_step >= rtt, "{per_step:?}: faster than light");
    assert!(
        per_step < rtt * 3,
        "{per_step:?} per step over a {rtt:?} round trip: a channel opened per step costs one more"
    );
}
