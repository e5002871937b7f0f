//! `must_reach: [host:port, ...]`: what a client's endpoints depend on
//! (an ERP database, a file server), written in the inventory at the
//! defaults, a client or a host (the nearest list wins, whole).
//!
//! Each target is checked here, where its line and column are known, so
//! the probe the planner makes from it can quote a host and a number and
//! nothing else.

use serde_saphyr::Spanned;

use super::diagnostic::{InputError, SourceFile};

/// A `host:port` target: a name or an IPv4 address, or `[IPv6]`, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("`{text}` is not a host:port target: {why}");
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("write it as erp.acme.local:1433"))?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .ok_or_else(|| bad("an IPv6 address goes in brackets, [fd00::10]:445"))?,
            None if host.contains(':') => {
                return Err(bad("an IPv6 address goes in brackets, [fd00::10]:445"));
            }
            None => host,
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if host.is_empty() || !host.chars().all(allowed) {
            return Err(bad(
                "the host is a DNS name or an IP address (letters, digits, `.`, `-`, `_`)",
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port is a number from 1 to 65535"))?;
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// Whether the host is a name (resolved by DNS), not an address.
    pub fn is_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }
}

/// Checks a level's list; returns it as written.
pub(super) fn check(
    source: &SourceFile,
    list: Option<Vec<Spanned<String>>>,
    errors: &mut Vec<InputError>,
) -> Option<Vec<String>> {
    let list = list?;
    for target in &list {
        if let Err(message) = Target::parse(&target.value) {
            errors.push(source.error_at_location(&target.referenced, message));
        }
    }
    Some(list.into_iter().map(|t| t.value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_bracketed_ipv6() {
        assert_eq!(
            Target::parse("erp.acme.local:1433").unwrap(),
            Target {
                host: "erp.acme.local".into(),
                port: 1433
            }
        );
        assert!(Target::parse("erp.acme.local:1433").unwrap().is_name());
        assert!(!Target::parse("10.1.0.10:445").unwrap().is_name());
        assert_eq!(Target::parse("[fd00::10]:445").unwrap().host, "fd00::10");
        for bad in [
            "erp",
            "erp:0",
            "erp:70000",
            "fd00::10:445",
            ":445",
            "a b:1",
            "x;rm:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
