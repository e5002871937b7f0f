//! Where a PostgreSQL journal is: the connection string, its password kept
//! out of every message.
//!
//! `--state postgres://user@host:port/db` (or `ORCHESTRATE_STATE`). A
//! password may be written in the string, but it is never shown: the
//! journal's name in every message is the string with the password as
//! `***`, and any driver message that would quote it is redacted too.
//! Better is no password in the string at all: like libpq, a string
//! without one takes it from the password file, `PGPASSFILE` or
//! `~/.pgpass` (`host:port:database:user:password`, `*` for any, the file
//! readable by its owner only, else ignored with a warning).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A PostgreSQL journal's connection.
#[derive(Clone)]
pub struct Target {
    /// The string as shown: the password, if any, as `***`.
    shown: String,
    /// The password, only to redact it from messages.
    password: Option<String>,
    pub(crate) config: tokio_postgres::Config,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Is `text` a PostgreSQL connection string (rather than a file)?
pub fn is_postgres(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl Target {
    /// Parses a `postgres://` string; the error never quotes a password.
    pub fn parse(url: &str) -> Result<Target, String> {
        let shown = redact_url(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            format!(
                "{shown}: not a PostgreSQL connection string ({}); write postgres://USER@HOST:PORT/DATABASE",
                redact_text(&e.to_string(), password_in(url).as_deref())
            )
        })?;
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .map_err(|_| format!("{shown}: no user; write postgres://USER@HOST/DATABASE"))?;
            config.user(&user);
        }
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_string();
            config.dbname(&user);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("orchestrate");
        if config.get_password().is_none()
            && let Some(password) = from_password_file(&config)
        {
            config.password(password);
        }
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(Target {
            shown,
            password,
            config,
        })
    }

    /// `text` with the password, if it appears, as `***`.
    pub fn redact(&self, text: &str) -> String {
        redact_text(text, self.password.as_deref())
    }
}

fn redact_text(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_string(),
    }
}

/// The password written in a URL's user part, decoded as the driver does.
fn password_in(url: &str) -> Option<String> {
    let (start, end) = user_info(url)?;
    let info = &url[start..end];
    info.split_once(':').map(|(_, p)| p.to_string())
}

/// Where the `user:password` part of a URL is, if it has one.
fn user_info(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((start, start + at))
}

/// The URL with its password (in the user part or as `password=`) as `***`.
pub fn redact_url(url: &str) -> String {
    let mut shown = url.to_string();
    if let Some((start, end)) = user_info(url)
        && let Some(colon) = url[start..end].find(':')
    {
        shown.replace_range(start + colon + 1..end, "***");
    }
    if let Some(query) = shown.find('?') {
        let (head, tail) = shown.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        shown = format!("{head}{}", params.join("&"));
    }
    shown
}

/// The password libpq would take from `PGPASSFILE` or `~/.pgpass`.
fn from_password_file(config: &tokio_postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; ignored (chmod 0600 it)",
                path.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    password_for(&text, [host.as_str(), port.as_str(), db, user])
}

/// The first line of a password file that matches `wanted` (host, port,
/// database, user), as libpq reads it: `*` matches anything, `\:` and
/// `\\` are a colon and a backslash, `#` starts a comment line.
fn password_for(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w || (w == "localhost" && f == "127.0.0.1"));
        if matches {
            return fields.pop();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_string_is_never_shown() {
        assert_eq!(
            redact_url("postgres://msp:s3cr3t@db.example:5433/journal"),
            "postgres://msp:***@db.example:5433/journal"
        );
        assert_eq!(
            redact_url("postgresql://msp@db/j?sslmode=prefer&password=s3cr3t"),
            "postgresql://msp@db/j?sslmode=prefer&password=***"
        );
        assert_eq!(redact_url("postgres://msp@db/j"), "postgres://msp@db/j");
        let target = Target::parse("postgres://msp:s3cr3t@db.example/journal").unwrap();
        assert_eq!(target.to_string(), "postgres://msp:***@db.example/journal");
        assert_eq!(
            target.redact("password authentication failed: s3cr3t"),
            "password authentication failed: ***"
        );
        let bad = Target::parse("postgres://msp:s3cr3t@db.example:notaport/j").unwrap_err();
        assert!(!bad.contains("s3cr3t"), "{bad}");
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text =
            "# comment\nother:5432:*:msp:no\ndb.example:*:journal:msp:pa\\:ss\n*:*:*:*:any\n";
        assert_eq!(
            password_for(text, ["db.example", "5432", "journal", "msp"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            password_for(text, ["x", "1", "y", "z"]).as_deref(),
            Some("any")
        );
        assert_eq!(password_for("h:1:d:u:p\n", ["h", "2", "d", "u"]), None);
    }
}
