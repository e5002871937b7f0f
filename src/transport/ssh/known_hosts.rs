//! OpenSSH `known_hosts` files: reading, matching a host's key, recording new keys.
//!
//! russh ships a helper for this, but it ignores wildcard patterns, negation
//! and the `@revoked` / `@cert-authority` markers, and it fails on the first
//! line it cannot read. An MSP's known_hosts is written by many tools over
//! years, so this reader follows `sshd(8)`'s "SSH_KNOWN_HOSTS FILE FORMAT":
//! comma-separated host patterns with `*`, `?` and `!`, `[host]:port` names
//! for non-standard ports, hashed names (`|1|salt|HMAC-SHA1(salt, name)`),
//! and markers. A line it cannot read is kept as a [`Problem`] (reported,
//! then skipped) rather than making the whole file unusable.
//!
//! The verdict mirrors OpenSSH: a host is "changed" when it is known but none
//! of its keys of the presented key type match (the connector prefers the
//! recorded key types when negotiating, so a different type means the host
//! no longer offers the recorded one, which is treated as a change too).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// What a line applies to, from its leading `@` marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    None,
    Revoked,
    /// A CA key for host certificates; kept, never used (no certificate support).
    CertAuthority,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// `|1|salt|hash`: one host name, hashed with HMAC-SHA1 keyed by the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns; `true` marks a negated (`!`) pattern.
    Patterns(Vec<(bool, String)>),
}

/// One readable line of the file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number, for messages.
    pub line: usize,
    pub marker: Marker,
    hosts: Hosts,
    pub key: PublicKey,
}

/// A line that could not be read: reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub reason: String,
}

/// How a presented host key compares with the file.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A line for this host holds this key.
    Known { line: usize },
    /// No line names this host.
    Unknown,
    /// The host is known with other keys; the first one is given for the message.
    Changed { line: usize, known: Box<PublicKey> },
    /// The key is marked `@revoked` for this host.
    Revoked { line: usize },
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    pub path: Option<PathBuf>,
    pub entries: Vec<Entry>,
    pub problems: Vec<Problem>,
}

/// The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// `SHA256:...` as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `ssh-ed25519 AAAA...` (no comment), the form used in files and inventories.
pub fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .unwrap_or_else(|_| key.algorithm().as_str().to_string())
}

/// Parses `ssh-ed25519 AAAA... [comment]` (a pinned key, or a .pub file's text).
pub fn parse_key(text: &str) -> Result<PublicKey, String> {
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err("expected `<key type> <base64>`".into());
    };
    let key = russh::keys::parse_public_key_base64(blob)
        .map_err(|e| format!("cannot decode the {kind} key: {e}"))?;
    if key.algorithm().as_str() != kind {
        return Err(format!(
            "the key says it is {kind} but holds a {} key",
            key.algorithm().as_str()
        ));
    }
    Ok(key)
}

/// Parsed files by path, with the size and mtime they were parsed at.
type Cache = HashMap<PathBuf, (Option<SystemTime>, u64, Arc<KnownHosts>)>;
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);

impl KnownHosts {
    /// [`KnownHosts::load`], parsed again only when the file changed: a
    /// fleet's hosts share one file, and its bad lines are reported once.
    pub fn load_shared(path: &Path) -> std::io::Result<Arc<KnownHosts>> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(KnownHosts {
                    path: Some(path.to_path_buf()),
                    ..KnownHosts::default()
                }));
            }
            Err(e) => return Err(e),
        };
        let stamp = (meta.modified().ok(), meta.len());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((modified, len, parsed)) = cache.get(path)
            && (*modified, *len) == stamp
        {
            return Ok(parsed.clone());
        }
        let parsed = Arc::new(KnownHosts::load(path)?);
        cache.insert(path.to_path_buf(), (stamp.0, stamp.1, parsed.clone()));
        Ok(parsed)
    }

    /// Reads `path`; a missing file is an empty one (nothing known yet).
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut parsed = KnownHosts::parse(&text);
        parsed.path = Some(path.to_path_buf());
        for problem in &parsed.problems {
            tracing::warn!(
                "{}:{}: skipped a line that cannot be read: {}",
                path.display(),
                problem.line,
                problem.reason
            );
        }
        Ok(parsed)
    }

    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(trimmed, line) {
                Ok(entry) => known.entries.push(entry),
                Err(reason) => known.problems.push(Problem { line, reason }),
            }
        }
        known
    }

    /// Compares `key`, presented by `host` on `port`, with the file.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let mut first_other: Option<&Entry> = None;
        let mut same_kind_other: Option<&Entry> = None;
        for entry in self.entries.iter().filter(|e| e.matches(&name)) {
            let same = entry.key.key_data() == key.key_data();
            match entry.marker {
                Marker::Revoked if same => return Verdict::Revoked { line: entry.line },
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None => {
                    if same {
                        // A revocation later in the file still wins.
                        if let Some(revoked) = self.revocation(&name, key) {
                            return Verdict::Revoked { line: revoked };
                        }
                        return Verdict::Known { line: entry.line };
                    }
                    first_other.get_or_insert(entry);
                    if entry.key.algorithm() == key.algorithm() {
                        same_kind_other.get_or_insert(entry);
                    }
                }
            }
        }
        match same_kind_other.or(first_other) {
            Some(entry) => Verdict::Changed {
                line: entry.line,
                known: Box::new(entry.key.clone()),
            },
            None => match self.revocation(&name, key) {
                Some(line) => Verdict::Revoked { line },
                None => Verdict::Unknown,
            },
        }
    }

    fn revocation(&self, name: &str, key: &PublicKey) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| {
                e.marker == Marker::Revoked && e.key.key_data() == key.key_data() && e.matches(name)
            })
            .map(|e| e.line)
    }

    /// Key types recorded for the host, to prefer them when negotiating.
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut found: Vec<Algorithm> = Vec::new();
        for entry in &self.entries {
            if entry.marker == Marker::None && entry.matches(&name) {
                let algorithm = entry.key.algorithm();
                if !found.contains(&algorithm) {
                    found.push(algorithm);
                }
            }
        }
        found
    }
}

impl Entry {
    /// Whether this line names `name` (already in [`lookup_name`] form).
    pub fn matches(&self, name: &str) -> bool {
        match &self.hosts {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = HmacSha1::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let mut positive = false;
                for (negated, pattern) in patterns {
                    if wildcard_match(pattern, name) {
                        if *negated {
                            return false;
                        }
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

fn parse_line(line: &str, number: usize) -> Result<Entry, String> {
    let mut fields = line.split_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        other if other.starts_with('@') => return Err(format!("unknown marker {other}")),
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next().ok_or("a marker but no host patterns")?;
    }
    let hosts = parse_hosts(first)?;
    let kind = fields.next().ok_or("host patterns but no key type")?;
    let blob = fields.next().ok_or("a key type but no key")?;
    let key = parse_key(&format!("{kind} {blob}"))?;
    Ok(Entry {
        line: number,
        marker,
        hosts,
        key,
    })
}

fn parse_hosts(field: &str) -> Result<Hosts, String> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest
            .split_once('|')
            .ok_or("a hashed host name without its hash")?;
        let salt = B64
            .decode(salt)
            .map_err(|e| format!("hashed host: bad salt: {e}"))?;
        let hash = B64
            .decode(hash)
            .map_err(|e| format!("hashed host: bad hash: {e}"))?;
        if salt.len() != 20 || hash.len() != 20 {
            return Err("hashed host: salt and hash must be 20 bytes (HMAC-SHA1)".into());
        }
        return Ok(Hosts::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return Err(format!("unsupported hashed host format {field}"));
    }
    let patterns: Vec<(bool, String)> = field
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => (true, rest.to_ascii_lowercase()),
            None => (false, p.to_ascii_lowercase()),
        })
        .collect();
    if patterns.is_empty() {
        return Err("no host patterns".into());
    }
    Ok(Hosts::Patterns(patterns))
}

/// `*` matches any run of characters, `?` exactly one (OpenSSH `match_pattern`).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Appends `host`'s key to `path` (created with its directory if missing).
/// One `write` of one line with `O_APPEND`, so hosts recorded at the same
/// time never interleave.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut needs_newline = false;
    if let Ok(existing) = std::fs::read(path) {
        needs_newline = existing.last().is_some_and(|b| *b != b'\n');
    }
    let line = format!(
        "{}{} {}\n",
        if needs_newline { "\n" } else { "" },
        lookup_name(host, port),
        openssh_line(key)
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())
}

#[cfg(test)]
#[path = "known_hosts_tests.rs"]
mod tests;
