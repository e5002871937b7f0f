//! Path masks as regular expressions: the `glob_regex` template filter.
//!
//! Kaspersky's Linux products write exclusion paths and file masks with `*`
//! (any characters but `/`, within one name) and `**` (any characters,
//! `/` included), as their settings pages describe (e.g. KESL 12 "Trusted
//! process" and KICS for Linux "Exclude process memory from scans",
//! support.kaspersky.com). ClamAV's `ExcludePath` takes POSIX extended
//! regular expressions. Carried over as literal text, `/home/*/cache`
//! would exclude nothing (or, unescaped, something else), so each mask is
//! translated here, everything but the wildcards escaped.

use crate::quote::regex_escape;

/// `mask` as an unanchored POSIX extended regular expression: `**` becomes
/// `.*`, `*` becomes `[^/]*`, `?` becomes `[^/]`, everything else matches
/// literally. Callers anchor it (`^...(/|$)`).
pub fn glob_regex(mask: &str) -> String {
    let mut out = String::with_capacity(mask.len() + 8);
    let mut chars = mask.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            other => out.push_str(&regex_escape(&other.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_stays_within_one_name_and_two_stars_cross_folders() {
        assert_eq!(glob_regex("/home/*/cache"), "/home/[^/]*/cache");
        assert_eq!(glob_regex("/srv/**/tmp"), "/srv/.*/tmp");
        assert_eq!(glob_regex("*.log"), "[^/]*\\.log");
        assert_eq!(glob_regex("file?.db"), "file[^/]\\.db");
    }

    #[test]
    fn everything_else_is_literal() {
        assert_eq!(
            glob_regex("/opt/app (x)/data+1.db"),
            "/opt/app \\(x\\)/data\\+1\\.db"
        );
    }
}
