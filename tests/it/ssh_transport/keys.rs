//! Logging in and trusting hosts: key files, agent, password, host key
//! policies, pinned keys and keyscan.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_of_every_kind_log_in() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let connector = no_agent();
    for kind in [ClientKey::Ed25519, ClientKey::Ecdsa, ClientKey::Rsa] {
        let mut target = env.target("keys", &server.host());
        target.ssh.identity_file = Some(env.key(kind));
        let session = connector.connect(&target).await.unwrap_or_else(|e| {
            panic!("{kind:?}: {e}\n{}", server.log());
        });
        assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
    }
    // RSA went with rsa-sha2-512/256, never the SHA-1 `ssh-rsa` signature.
    let log = server.log();
    assert!(
        log.contains("Accepted publickey") && log.contains("RSA SHA256:"),
        "{log}"
    );
    assert!(!log.contains("ssh-rsa signature"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_key_with_passphrase_and_wrong_passphrase() {
    let env = SshdEnv::new();
    let server = env.server(3);
    env.trust(&server.hosts());
    let connector = no_agent();
    for (i, host) in server.hosts().iter().enumerate() {
        let mut target = env.target(&format!("enc{i}"), host);
        target.ssh.identity_file = Some(env.key(ClientKey::Encrypted));
        target.ssh.identity_passphrase = Some(Secret::new(PASSPHRASE));
        let session = connector.connect(&target).await.expect("passphrase key");
        assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
    }
    // Decrypted once per connector (per run), not once per host.
    let cache = orchestrate::transport::ssh::auth::KeyCache::default();
    let secret = Secret::new(PASSPHRASE);
    let first = cache
        .get(&env.key(ClientKey::Encrypted), Some(&secret))
        .await
        .unwrap();
    let again = cache
        .get(&env.key(ClientKey::Encrypted), Some(&secret))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again));

    // A fresh connector (the decrypted key is cached per connector).
    let mut target = env.target("enc-wrong", &server.host());
    target.ssh.identity_file = Some(env.key(ClientKey::Encrypted));
    target.ssh.identity_passphrase = Some(Secret::new("not the passphrase"));
    let (e, text) = err_text(no_agent().connect(&target).await);
    assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
    assert!(text.contains("wrong passphrase"), "{text}");
    assert!(!text.contains("not the passphrase"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_login_and_a_failed_login_names_host_user_and_methods() {
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&server.hosts());
    let agent = env.agent(&[ClientKey::Rsa]);
    let mut target = env.target("agent-host", &server.host());
    target.ssh.identity_file = None;
    let with_agent = SshConnector::with_agent(Some(agent.socket.clone()));
    let session = with_agent.connect(&target).await.expect("agent login");
    assert_eq!(run(&*session, "echo ok").await.1, "ok\n");

    let mut target = env.target("acme-ws01", &server.host());
    target.ssh.identity_file = Some(env.key(ClientKey::Unauthorized));
    target.ssh.password = Some(Secret::new("hunter2-not-it"));
    let stranger_agent = env.agent(&[ClientKey::Unauthorized]);
    let connector = SshConnector::with_agent(Some(stranger_agent.socket.clone()));
    let (e, text) = err_text(connector.connect(&target).await);
    assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
    assert!(text.contains("host acme-ws01"), "{text}");
    assert!(text.contains(&format!("as {}", env.user())), "{text}");
    assert!(
        text.contains("publickey") && text.contains("id_stranger"),
        "{text}"
    );
    assert!(
        text.contains("ssh-agent") && text.contains("password"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login() {
    let env = SshdEnv::new();
    let Some(password) = env.password() else {
        eprintln!("skipped: no test password (run as root after scripts/deps/ssh.sh)");
        return;
    };
    let server = env.server(1);
    env.trust(&server.hosts());
    let mut target = env.target("pw", &server.host());
    target.ssh.identity_file = None;
    target.ssh.password = Some(Secret::new(password));
    let session = no_agent()
        .connect(&target)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
    assert!(server.log().contains("Accepted password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pinned_or_unknown_host_key_is_refused_before_anything_runs() {
    let env = SshdEnv::new();
    let server = env.server(2);
    let hosts = server.hosts();
    let marker = env.dir().join("ran");
    let connector = no_agent();

    // Unknown under the strict policy.
    let target = env.target("unknown", &hosts[0]);
    let (e, text) = err_text(connector.connect(&target).await);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
    assert!(
        text.contains("unknown") && text.contains("SHA256:"),
        "{text}"
    );

    // Pinned to another key: both fingerprints are named.
    let other = {
        let path = env.key(ClientKey::Unauthorized);
        std::fs::read_to_string(path.with_extension("pub")).unwrap()
    };
    let mut target = env.target("acme-ws01", &hosts[1]);
    target.ssh.host_key = Some(other.clone());
    let (e, text) = err_text(connector.connect(&target).await);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
    let parse = |s: &str| orchestrate::transport::ssh::known_hosts::parse_key(s).unwrap();
    let pinned_fp = orchestrate::transport::ssh::known_hosts::fingerprint(&parse(&other));
    let real_fp = orchestrate::transport::ssh::known_hosts::fingerprint(&parse(&hosts[1].host_key));
    assert!(
        text.contains(&pinned_fp) && text.contains(&real_fp),
        "{text}"
    );
    assert!(text.contains("host acme-ws01"), "{text}");
    assert!(!marker.exists());
    assert!(
        !server.log().contains("Accepted publickey"),
        "{}",
        server.log()
    );

    // The right pinned key needs no known_hosts at all.
    let mut target = env.target("pinned", &hosts[1]);
    target.ssh.host_key = Some(hosts[1].host_key.clone());
    target.ssh.known_hosts = None;
    let session = connector.connect(&target).await.expect("pinned key");
    assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_the_key_then_a_changed_key_is_refused() {
    let env = SshdEnv::new();
    let mut server = env.server(1);
    let connector = no_agent();
    let mut target = env.target("tofu", &server.host());
    target.host_key_policy = HostKeyPolicy::AcceptNew;
    // Two connections at once to the new host record it once.
    let (session, twin) = tokio::join!(connector.connect(&target), connector.connect(&target));
    let session = session.expect("accept-new");
    twin.expect("accept-new, twice");
    assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
    session.close().await;
    let recorded = std::fs::read_to_string(&env.known_hosts).unwrap();
    let host = server.host();
    assert_eq!(
        recorded,
        format!("[{}]:{} {}\n", host.address, host.port, host.host_key)
    );
    // Known now, even under strict.
    target.host_key_policy = HostKeyPolicy::Strict;
    connector.connect(&target).await.expect("recorded key");

    server.change_host_key();
    target.host_key_policy = HostKeyPolicy::AcceptNew;
    let (e, text) = err_text(connector.connect(&target).await);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
    assert!(text.contains("CHANGED"), "{text}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), recorded);
    // `off` skips the check.
    target.host_key_policy = HostKeyPolicy::Off;
    connector.connect(&target).await.expect("policy off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyscan_reports_new_unchanged_changed_and_unreachable() {
    let env = SshdEnv::new();
    let server = env.server(3);
    let mut changed = env.server(1);
    let down = env.server(1);
    let hosts = server.hosts();
    env.trust(&hosts[..1]);
    env.trust(&[changed.host()]);
    changed.change_host_key();
    down.stop();
    let targets: Vec<Target> = vec![
        env.target("known", &hosts[0]),
        env.target("new1", &hosts[1]),
        env.target("new2", &hosts[2]),
        env.target("changed", &changed.host()),
        env.target("down", &down.host()),
    ];
    let outcomes = no_agent().keyscan(&targets, 8).await;
    let status = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.host == name)
            .unwrap()
            .status
            .clone()
    };
    assert!(matches!(status("known"), KeyscanStatus::Unchanged { .. }));
    assert!(matches!(
        status("new1"),
        KeyscanStatus::New {
            recorded: Ok(()),
            ..
        }
    ));
    assert!(matches!(
        status("new2"),
        KeyscanStatus::New {
            recorded: Ok(()),
            ..
        }
    ));
    match status("changed") {
        KeyscanStatus::Changed { presented, known } => {
            assert!(presented.starts_with("SHA256:") && known.starts_with("SHA256:"));
            assert_ne!(presented, known);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(status("down"), KeyscanStatus::Unreachable(_)));
    // The new ones are recorded: a second scan finds them unchanged.
    let again = no_agent().keyscan(&targets[1..3], 2).await;
    assert!(
        again
            .iter()
            .all(|o| matches!(o.status, KeyscanStatus::Unchanged { .. })),
        "{again:?}"
    );
    // Nothing logged in: keyscan stops after the host key.
    assert!(!server.log().contains("Accepted"), "{}", server.log());
}

/// known_hosts files as OpenSSH's own tools write them verify real hosts:
/// `ssh-keyscan` output, `ssh-keygen -H` hashed names, wildcard patterns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_from_openssh_tools_verify_real_hosts() {
    let env = SshdEnv::new();
    let server = env.server(3);
    let hosts = server.hosts();
    let connector = no_agent();
    let scan = std::process::Command::new("ssh-keyscan")
        .args([
            "-t",
            "ed25519",
            "-p",
            &hosts[0].port.to_string(),
            &hosts[0].address,
        ])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    assert!(scanned.contains(&hosts[0].host_key), "{scanned}");
    // Host 1 by a wildcard over its last octet, with host 2 excluded by `!`.
    let (prefix, _) = hosts[1].address.rsplit_once('.').unwrap();
    let wildcard = format!(
        "[{prefix}.*]:{port},![{}]:{port} {}\n",
        hosts[2].address,
        hosts[1].host_key,
        port = hosts[1].port
    );
    std::fs::write(&env.known_hosts, &scanned).unwrap();
    let hashed = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&env.known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    let mut text = std::fs::read_to_string(&env.known_hosts).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    text.push_str("garbage line\n");
    text.push_str(&wildcard);
    std::fs::write(&env.known_hosts, &text).unwrap();
    for host in &hosts[..2] {
        let session = connector
            .connect(&env.target("from-tools", host))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
    }
    let (e, _) = err_text(connector.connect(&env.target("negated", &hosts[2])).await);
    assert!(matches!(e, TransportError::HostKey(_)), "{e:?}");
}

/// A host known by its RSA or ECDSA key only is asked for that key type
/// (as OpenSSH does), not refused because it would rather show ed25519.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_key_type_is_negotiated() {
    let env = SshdEnv::new();
    let server = env.server_with_host_keys(2, &["rsa", "ecdsa"]);
    let hosts = server.hosts();
    let connector = no_agent();
    for (host, kind) in hosts.iter().zip(["rsa", "ecdsa"]) {
        std::fs::write(
            &env.known_hosts,
            format!(
                "[{}]:{} {}\n",
                host.address,
                host.port,
                server.host_key_of(kind)
            ),
        )
        .unwrap();
        let session = connector
            .connect(&env.target(kind, host))
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(run(&*session, "echo ok").await.1, "ok\n");
        // Pinned works the same way.
        let mut pinned = env.target(kind, host);
        pinned.ssh.known_hosts = None;
        pinned.ssh.host_key = Some(server.host_key_of(kind));
        connector
            .connect(&pinned)
            .await
            .expect("pinned non-ed25519 key");
    }
}
