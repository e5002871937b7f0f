//! Unit tests of the known_hosts reader, on output of the real OpenSSH tools
//! (see `testdata/README.md`).

use super::*;

const KEYSCAN_22: &str = include_str!("testdata/keyscan_port22.txt");
const KEYSCAN_2299: &str = include_str!("testdata/keyscan_port2299.txt");
const HASHED: &str = include_str!("testdata/hashed_by_ssh_keygen.txt");

fn key(name: &str) -> PublicKey {
    let text = match name {
        "ed25519" => include_str!("testdata/host_ed25519.pub"),
        "ecdsa" => include_str!("testdata/host_ecdsa.pub"),
        "rsa" => include_str!("testdata/host_rsa.pub"),
        "other" => include_str!("testdata/other_ed25519.pub"),
        _ => unreachable!(),
    };
    parse_key(text).expect("fixture key")
}

fn known(kh: &KnownHosts, host: &str, port: u16, k: &str) -> bool {
    matches!(kh.check(host, port, &key(k)), Verdict::Known { .. })
}

#[test]
fn keyscan_output_on_port_22_and_bracketed_port() {
    let kh = KnownHosts::parse(&format!("{KEYSCAN_22}{KEYSCAN_2299}"));
    assert!(kh.problems.is_empty(), "{:?}", kh.problems);
    assert_eq!(kh.entries.len(), 6);
    for k in ["ed25519", "ecdsa", "rsa"] {
        assert!(known(&kh, "127.0.0.1", 22, k));
        assert!(known(&kh, "127.0.0.1", 2299, k));
    }
    // The port matters: [127.0.0.1]:2222 is another host.
    assert!(matches!(
        kh.check("127.0.0.1", 2222, &key("ed25519")),
        Verdict::Unknown
    ));
    let only_2299 = KnownHosts::parse(KEYSCAN_2299);
    assert!(matches!(
        only_2299.check("127.0.0.1", 22, &key("ed25519")),
        Verdict::Unknown
    ));
}

#[test]
fn hashed_entries_from_ssh_keygen_h() {
    let kh = KnownHosts::parse(HASHED);
    assert!(kh.problems.is_empty(), "{:?}", kh.problems);
    assert_eq!(kh.entries.len(), 6);
    assert!(known(&kh, "127.0.0.1", 22, "ed25519"));
    assert!(known(&kh, "127.0.0.1", 2299, "rsa"));
    assert!(matches!(
        kh.check("127.0.0.2", 22, &key("ed25519")),
        Verdict::Unknown
    ));
    assert!(matches!(
        kh.check("127.0.0.1", 2299, &key("other")),
        Verdict::Changed { .. }
    ));
}

#[test]
fn changed_key_names_the_recorded_one() {
    let kh = KnownHosts::parse(KEYSCAN_2299);
    match kh.check("127.0.0.1", 2299, &key("other")) {
        Verdict::Changed { known, .. } => {
            assert_eq!(fingerprint(&known), fingerprint(&key("ed25519")));
            assert!(fingerprint(&known).starts_with("SHA256:"));
        }
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn wildcards_and_negation() {
    let ed = openssh_line(&key("ed25519"));
    let text = format!(
        "*.acme.example,!bad.acme.example {ed}\n\
         10.1.0.? {ed}\n\
         [10.2.*]:2222 {ed}\n"
    );
    let kh = KnownHosts::parse(&text);
    assert!(kh.problems.is_empty(), "{:?}", kh.problems);
    assert!(known(&kh, "ws01.acme.example", 22, "ed25519"));
    assert!(known(&kh, "WS01.ACME.example", 22, "ed25519"));
    assert!(!known(&kh, "bad.acme.example", 22, "ed25519"));
    assert!(known(&kh, "10.1.0.7", 22, "ed25519"));
    assert!(!known(&kh, "10.1.0.70", 22, "ed25519"));
    assert!(known(&kh, "10.2.3.4", 2222, "ed25519"));
    assert!(!known(&kh, "10.2.3.4", 22, "ed25519"));
}

#[test]
fn revoked_and_cert_authority_markers() {
    let ed = openssh_line(&key("ed25519"));
    let other = openssh_line(&key("other"));
    let text = format!(
        "@cert-authority *.acme.example {other}\n\
         host1 {ed}\n\
         @revoked host1 {ed}\n\
         @revoked * {other}\n"
    );
    let kh = KnownHosts::parse(&text);
    assert!(kh.problems.is_empty(), "{:?}", kh.problems);
    assert_eq!(kh.entries.len(), 4);
    assert!(matches!(
        kh.check("host1", 22, &key("ed25519")),
        Verdict::Revoked { line: 3 }
    ));
    assert!(matches!(
        kh.check("ws.acme.example", 22, &key("other")),
        Verdict::Revoked { line: 4 }
    ));
    // A CA line is not a host key for the host.
    assert!(matches!(
        kh.check("ws.acme.example", 22, &key("ed25519")),
        Verdict::Unknown
    ));
}

#[test]
fn garbage_lines_are_reported_and_skipped() {
    let text = format!(
        "this is not a known_hosts line\n\
         # a comment\n\
         \n\
         host2 ssh-ed25519 !!!notbase64\n\
         @bogus host3 ssh-ed25519 AAAA\n\
         |1|short|short ssh-ed25519 AAAA\n\
         host4 ssh-rsa {}\n\
         {KEYSCAN_22}",
        openssh_line(&key("ed25519"))
            .split_whitespace()
            .nth(1)
            .unwrap()
    );
    let kh = KnownHosts::parse(&text);
    let lines: Vec<usize> = kh.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![1, 4, 5, 6, 7], "{:?}", kh.problems);
    assert!(known(&kh, "127.0.0.1", 22, "ed25519"));
}

#[test]
fn recorded_keys_are_read_back() {
    let dir = std::env::temp_dir().join(format!("orchestrate-kh-{}", std::process::id()));
    let path = dir.join("sub/known_hosts");
    let _ = std::fs::remove_dir_all(&dir);
    append(&path, "10.0.0.1", 22, &key("ed25519")).unwrap();
    append(&path, "10.0.0.1", 2022, &key("rsa")).unwrap();
    let kh = KnownHosts::load(&path).unwrap();
    assert!(known(&kh, "10.0.0.1", 22, "ed25519"));
    assert!(known(&kh, "10.0.0.1", 2022, "rsa"));
    assert_eq!(kh.algorithms_for("10.0.0.1", 2022).len(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("10.0.0.1 ssh-ed25519 "));
    assert!(text.contains("\n[10.0.0.1]:2022 ssh-rsa "));
    // The shared copy is parsed again when the file grows.
    let first = KnownHosts::load_shared(&path).unwrap();
    assert!(Arc::ptr_eq(
        &first,
        &KnownHosts::load_shared(&path).unwrap()
    ));
    append(&path, "10.0.0.2", 22, &key("ecdsa")).unwrap();
    let grown = KnownHosts::load_shared(&path).unwrap();
    assert!(known(&grown, "10.0.0.2", 22, "ecdsa"));
    // A missing file is empty, not an error.
    assert!(
        KnownHosts::load(&dir.join("none"))
            .unwrap()
            .entries
            .is_empty()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wildcard_matcher() {
    assert!(wildcard_match("*", ""));
    assert!(wildcard_match("a*c", "abbbc"));
    assert!(wildcard_match("a?c", "abc"));
    assert!(!wildcard_match("a?c", "ac"));
    assert!(wildcard_match("*.x.*", "a.x.b"));
    assert!(!wildcard_match("*.x", "a.x.b"));
}
