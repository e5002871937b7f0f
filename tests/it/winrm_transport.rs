//! The WinRM transport against the Python WinRM test endpoint
//! (tests/winrm_endpoint/server.py, whose NTLM is pyspnego's acceptor and
//! whose behaviour is checked with pywinrm by the pytest suite beside it).
//!
//! Each test starts its own endpoint on loopback with its own credentials.
//! Commands run there in `sh`: a PowerShell step's text, read from stdin
//! as the transport's bootstrap reads it, is handed to `sh`, so the scripts
//! below are sh.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::upload_source;
use orchestrate::transport::winrm::WinrmConnector;
use orchestrate::transport::{
    Command, Connector, ExitStatus, HostKeyPolicy, Os, OutputSink, Script, Secret, Session,
    SshSettings, Stream, Target, TransportError, TransportKind, WinrmAuth, WinrmSettings,
};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Endpoint {
    _child: tokio::process::Child,
    addresses: Vec<(String, u16)>,
    dir: tempfile_dir::TempDir,
}

mod tempfile_dir {
    /// A directory removed on drop (no extra crate for this).
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "winrm-test-{tag}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Endpoint {
    async fn start(tag: &str, hosts: &[&str], args: &[&str]) -> Endpoint {
        let dir = tempfile_dir::TempDir::new(tag);
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/winrm_endpoint/server.py");
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(server).arg("--root").arg(dir.0.join("root"));
        for host in hosts {
            cmd.args(["--host", host]);
        }
        for arg in args {
            match *arg {
                "--tls" => cmd.arg("--tls-dir").arg(dir.0.join("tls")),
                other => cmd.arg(other),
            };
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "python3 runs the WinRM test endpoint (scripts/deps/winrm.sh installs its deps)",
            );
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addresses = Vec::new();
        let started = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["LISTENING", port, host] => {
                        addresses.push((host.to_string(), port.parse().unwrap()))
                    }
                    ["READY"] => return,
                    _ => {}
                }
            }
            panic!("the endpoint exited before it was ready");
        })
        .await;
        started.expect("the endpoint starts within 20s");
        // Keep reading so that later lines (REBOOTED) never block it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Endpoint {
            _child: child,
            addresses,
            dir,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.0.join("root")
    }

    fn ca(&self) -> PathBuf {
        self.dir.0.join("tls/ca.pem")
    }

    fn target(&self, i: usize, user: &str, password: &str, tls: bool, auth: WinrmAuth) -> Target {
        let (address, port) = self.addresses[i].clone();
        Target {
            name: format!("win{i:02}"),
            address,
            port: Some(port),
            os: Os::Windows,
            user: Some(user.into()),
            kind: TransportKind::Winrm,
            ssh: SshSettings::default(),
            winrm: WinrmSettings {
                port,
                tls,
                auth,
                password: Some(Secret::new(password)),
                ca_file: None,
                insecure_skip_verify: false,
            },
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(5),
            reboot_command: None,
            r#become: Default::default(),
        }
    }
}

/// An HTTP endpoint with NTLM only, the way Windows ships it.
async fn http_ntlm(tag: &str, extra: &[&str]) -> Endpoint {
    let mut args = vec![
        "--auth",
        "ntlm",
        "--user",
        "ACME\\admin",
        "--password",
        "Pa55-word",
    ];
    args.extend_from_slice(extra);
    Endpoint::start(tag, &["127.0.0.1"], &args).await
}

/// An HTTPS endpoint (its certificate made by a test CA) with Basic and NTLM.
async fn https(tag: &str) -> Endpoint {
    Endpoint::start(
        tag,
        &["127.0.0.1"],
        &["--tls", "--user", "admin", "--password", "pw"],
    )
    .await
}

async fn session(ep: &Endpoint) -> Box<dyn Session> {
    let target = ep.target(0, "ACME\\admin", "Pa55-word", false, WinrmAuth::Ntlm);
    WinrmConnector::new()
        .connect(&target)
        .await
        .expect("connects")
}

fn ps(text: &str) -> Command {
    Command::new(Script::PowerShell(text.into()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn twenty_hosts_run_commands_in_parallel() {
    let hosts: Vec<String> = (2..22).map(|i| format!("127.0.0.{i}")).collect();
    let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let ep = Endpoint::start(
        "fleet",
        &refs,
        &[
            "--auth",
            "ntlm",
            "--user",
            "admin",
            "--password",
            "fleet-pw",
        ],
    )
    .await;
    assert_eq!(ep.addresses.len(), 20);
    let connector = Arc::new(WinrmConnector::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let target = ep.target(i, "admin", "fleet-pw", false, WinrmAuth::Ntlm);
        let connector = connector.clone();
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await.expect("connects");
            for step in 0..3 {
                let done = session
                    .execute(&ps(&format!("echo {} step {step}", target.name)), None)
                    .await
                    .unwrap();
                assert_eq!(done.status, ExitStatus::Code(0));
                assert_eq!(text(&done.stdout), format!("{} step {step}\n", target.name));
            }
            let done = session
                .execute(&Command::new(Script::Cmd("echo via cmd".into())), None)
                .await
                .unwrap();
            assert_eq!(text(&done.stdout), "via cmd\n");
            session.close().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn wrong_password_is_a_clear_unreachable_error() {
    let ep = http_ntlm("badpw", &[]).await;
    let target = ep.target(0, "ACME\\admin", "not-the-password", false, WinrmAuth::Ntlm);
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    let msg = err.to_string();
    eprintln!("error shown: {msg}");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(
        msg.contains("401") && msg.contains("wrong user name or password"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"));
}

#[tokio::test]
async fn user_forms_domain_backslash_and_upn() {
    let ep = http_ntlm("userforms", &[]).await;
    for user in ["ACME\\admin", "admin@ACME", "admin"] {
        let target = ep.target(0, user, "Pa55-word", false, WinrmAuth::Ntlm);
        let session = WinrmConnector::new().connect(&target).await.unwrap();
        let done = session.execute(&ps("echo ok"), None).await.unwrap();
        assert_eq!(text(&done.stdout), "ok\n", "{user}");
    }
}

#[tokio::test]
async fn unsealed_ntlm_over_http_is_refused_by_the_endpoint() {
    let ep = http_ntlm("unsealed", &[]).await;
    let target = ep.target(0, "ACME\\admin", "Pa55-word", false, WinrmAuth::Ntlm);
    let err = WinrmConnector::new()
        .with_unsealed_http_for_tests(true)
        .connect(&target)
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    eprintln!("error shown: {msg}");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(
        msg.contains("unencrypted") && msg.contains("AllowUnencrypted"),
        "{msg}"
    );
}

#[tokio::test]
async fn basic_over_http_is_refused_before_connecting() {
    let ep = http_ntlm("basichttp", &[]).await;
    let target = ep.target(0, "admin", "pw", false, WinrmAuth::Basic);
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    assert!(
        err.to_string()
            .contains("Basic authentication over plain HTTP"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let ep = http_ntlm("refused", &[]).await;
    let mut target = ep.target(0, "admin", "pw", false, WinrmAuth::Ntlm);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    target.port = Some(port);
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test]
async fn untrusted_certificate_is_refused_then_accepted_with_ca_file() {
    let ep = https("tls").await;
    let target = ep.target(0, "admin", "pw", true, WinrmAuth::Basic);
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    let msg = err.to_string();
    eprintln!("error shown: {msg}");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(
        msg.contains("winrm-test-endpoint") && msg.contains("orchestrate test CA"),
        "{msg}"
    );

    for auth in [WinrmAuth::Basic, WinrmAuth::Ntlm] {
        let mut target = ep.target(0, "admin", "pw", true, auth);
        target.winrm.ca_file = Some(ep.ca());
        let session = WinrmConnector::new().connect(&target).await.unwrap();
        let done = session.execute(&ps("echo over tls"), None).await.unwrap();
        assert_eq!(text(&done.stdout), "over tls\n", "{auth:?}");
        session.close().await;
    }

    let mut target = ep.target(0, "admin", "pw", true, WinrmAuth::Basic);
    target.winrm.insecure_skip_verify = true;
    let session = WinrmConnector::new().connect(&target).await.unwrap();
    assert_eq!(
        session.execute(&ps("exit 0"), None).await.unwrap().status,
        ExitStatus::Code(0)
    );

    let mut target = ep.target(0, "admin", "wrong", true, WinrmAuth::Basic);
    target.winrm.ca_file = Some(ep.ca());
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn long_command_needs_several_receive_polls_and_streams() {
    let ep = http_ntlm("long", &["--max-operation-timeout", "0.4"]).await;
    let session = session(&ep).await;
    let (tx, mut rx) = OutputSink::channel();
    let started = Instant::now();
    let done = session
        .execute(&ps("echo first; sleep 2; echo second"), Some(tx))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(done.status, ExitStatus::Code(0));
    assert_eq!(text(&done.stdout), "first\nsecond\n");
    let first = rx.recv().await.unwrap();
    assert_eq!(
        (first.stream, &first.data[..]),
        (Stream::Stdout, &b"first\n"[..])
    );
}

#[tokio::test]
async fn stdin_exit_codes_and_powershell_errors() {
    let ep = http_ntlm("stdin", &[]).await;
    let session = session(&ep).await;
    let mut cmd = ps("tr a-z A-Z");
    cmd.stdin = Some(b"hello stdin\n".to_vec());
    let done = session.execute(&cmd, None).await.unwrap();
    assert_eq!(text(&done.stdout), "HELLO STDIN\n");
    // cmd.exe reads its commands from stdin: there is no room for data.
    let mut cmd = Command::new(Script::Cmd("sort".into()));
    cmd.stdin = Some(b"b\na\n".to_vec());
    let refused = session.execute(&cmd, None).await.unwrap_err();
    assert!(refused.to_string().contains("no stdin data"), "{refused}");

    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut cmd = ps("wc -c");
    cmd.stdin = Some(big);
    let done = session.execute(&cmd, None).await.unwrap();
    assert_eq!(text(&done.stdout).trim(), "300000");

    let done = session
        .execute(&Command::new(Script::Cmd("echo out; exit 7".into())), None)
        .await
        .unwrap();
    assert_eq!(done.status, ExitStatus::Code(7));

    let done = session
        .execute(&ps("echo 'bad <thing> & more' >&2; exit 3"), None)
        .await
        .unwrap();
    assert_eq!(done.status, ExitStatus::Code(3));
    assert_eq!(text(&done.stderr), "bad <thing> & more\n");

    let done = session
        .execute(&ps("printf 'caf\\303\\251'"), None)
        .await
        .unwrap();
    assert_eq!(text(&done.stdout), "café");
}

#[tokio::test]
async fn timeout_terminates_and_the_session_goes_on() {
    let ep = http_ntlm("timeout", &[]).await;
    let session = session(&ep).await;
    let mut cmd = Command::new(Script::Cmd("echo begun; sleep 30".into()));
    cmd.timeout = Some(Duration::from_millis(1500));
    let started = Instant::now();
    let done = session.execute(&cmd, None).await.unwrap();
    assert_eq!(done.status, ExitStatus::TimedOut);
    assert_eq!(text(&done.stdout), "begun\n");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let done = session.execute(&ps("echo after"), None).await.unwrap();
    assert_eq!(text(&done.stdout), "after\n");
}

#[tokio::test]
async fn large_upload_is_checked_by_hash_and_long_scripts_go_on_stdin() {
    let ep = http_ntlm("upload", &[]).await;
    let session = session(&ep).await;
    let contents: Vec<u8> = (0..2_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let dest = session.temp_path("payload.bin");
    assert!(
        dest.starts_with("C:\\Windows\\Temp\\orchestrate-"),
        "{dest}"
    );
    session
        .upload(&upload_source(&contents), &dest, 0o644)
        .await
        .unwrap();
    let local = ep
        .root()
        .join("C")
        .join(dest.trim_start_matches("C:\\").replace('\\', "/"));
    assert_eq!(std::fs::read(&local).unwrap(), contents);
    session.remove(&dest).await.unwrap();
    assert!(!local.exists());

    // A script longer than a command line allows goes by Send like any
    // other, with no file left behind.
    let filler = format!(": '{}'\n", "x".repeat(200)).repeat(60);
    let script = format!("echo start\n{filler}echo end\n");
    assert!(script.len() > 8191);
    let done = session.execute(&ps(&script), None).await.unwrap();
    assert_eq!(text(&done.stdout), "start\nend\n");
    let temp = ep.root().join("C/Windows/Temp");
    let left: Vec<_> = std::fs::read_dir(&temp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn reboot_waits_for_the_endpoint_and_goes_on() {
    let ep = http_ntlm("reboot", &["--reboot-delay", "1.5"]).await;
    let session = session(&ep).await;
    let done = session.execute(&ps("echo before"), None).await.unwrap();
    assert_eq!(text(&done.stdout), "before\n");
    let started = Instant::now();
    session.reboot(Duration::from_secs(30)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "it did wait");
    let done = session
        .execute(&ps("echo after reboot"), None)
        .await
        .unwrap();
    assert_eq!(text(&done.stdout), "after reboot\n");
    session.close().await;
}

#[tokio::test]
async fn a_shell_or_connection_the_endpoint_dropped_is_made_again() {
    let ep = http_ntlm(
        "idle",
        &["--shell-idle-timeout", "0.5", "--keepalive-timeout", "0.5"],
    )
    .await;
    let session = session(&ep).await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let done = session
            .execute(&ps(&format!("echo round {round}")), None)
            .await
            .unwrap();
        assert_eq!(text(&done.stdout), format!("round {round}\n"));
    }
}

#[tokio::test]
async fn a_connection_broken_mid_command_is_connection_lost() {
    let ep = http_ntlm("lost", &["--reboot-delay", "1"]).await;
    let running = session(&ep).await;
    let other = session(&ep).await;
    let command = tokio::spawn(async move {
        let result = running.execute(&ps("sleep 10; echo never"), None).await;
        (result, running)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Another session restarts the endpoint under the running command.
    let _ = other.execute(&ps("Restart-Computer -Force"), None).await;
    let (result, _running) = command.await.unwrap();
    let err = result.expect_err("the command cannot have finished");
    assert!(matches!(err, TransportError::ConnectionLost(_)), "{err:?}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out_as_unreachable() {
    let ep = http_ntlm("silent", &[]).await;
    // Accepts connections (the kernel does) but never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut target = ep.target(0, "admin", "pw", true, WinrmAuth::Basic);
    target.port = Some(silent.local_addr().unwrap().port());
    target.connect_timeout = Duration::from_millis(800);
    let started = Instant::now();
    let err = WinrmConnector::new().connect(&target).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_cancelled_step_leaves_the_session_usable_and_drop_cleans_up() {
    let ep = http_ntlm("cancel", &[]).await;
    let session = session(&ep).await;
    let cancelled = tokio::time::timeout(
        Duration::from_millis(800),
        session.execute(&ps("sleep 30"), None),
    )
    .await;
    assert!(cancelled.is_err());
    let done = session.execute(&ps("echo still here"), None).await.unwrap();
    assert_eq!(text(&done.stdout), "still here\n");

    // A step still running when the session is dropped ends with its shell.
    let marker = ep.root().join("marker");
    let step = Command::new(Script::Cmd("sleep 2; touch marker".into()));
    let _ = tokio::time::timeout(Duration::from_millis(500), session.execute(&step, None)).await;
    drop(session);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists());
}

#[tokio::test]
async fn a_reboot_that_never_happens_is_reported() {
    let ep = http_ntlm("noreboot", &[]).await;
    let mut target = ep.target(0, "ACME\\admin", "Pa55-word", false, WinrmAuth::Ntlm);
    target.reboot_command = Some("echo 'access denied' >&2; exit 5".into());
    let session = WinrmConnector::new().connect(&target).await.unwrap();
    let err = session.reboot(Duration::from_secs(2)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("did not go down") && msg.contains("access denied"),
        "{msg}"
    );
    // and the session still works
    let done = session.execute(&ps("echo alive"), None).await.unwrap();
    assert_eq!(text(&done.stdout), "alive\n");
}

#[tokio::test]
async fn large_output_comes_in_several_receives() {
    let ep = http_ntlm("bigout", &[]).await;
    let session = session(&ep).await;
    let done = session
        .execute(&ps("head -c 1000000 /dev/zero | tr '\\0' x; echo"), None)
        .await
        .unwrap();
    assert_eq!(done.status, ExitStatus::Code(0));
    assert_eq!(done.stdout.len(), 1_000_001);
}

#[tokio::test]
async fn an_upload_that_arrives_altered_fails_the_hash_check_and_leaves_the_old_copy() {
    let ep = http_ntlm("corrupt", &["--corrupt-uploads"]).await;
    let session = session(&ep).await;
    let folder = ep.root().join("C/ProgramData/msp");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("kes.msi"), "the good old copy").unwrap();
    let err = session
        .upload(
            &upload_source(b"payload"),
            "C:\\ProgramData\\msp\\kes.msi",
            0o644,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert_eq!(
        std::fs::read_to_string(folder.join("kes.msi")).unwrap(),
        "the good old copy"
    );
    let names: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert_eq!(names.len(), 1, "the altered copy is not left beside it");
}
