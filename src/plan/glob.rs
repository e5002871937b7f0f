//! Path masks in other products' syntax: the `glob_regex` template filter
//! (ClamAV's regular expressions) and `mdatp_folder` (Defender for
//! Endpoint on Linux's folder wildcards).
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

/// A Kaspersky folder mask as a Defender for Endpoint on Linux folder
/// exclusion (`mdatp exclusion folder add --path`), ending in `/`; `None`
/// where mdatp has no way to say it. mdatp's `*` stands for exactly one
/// folder inside a path and `?` for one character, as Kaspersky's `*` and
/// `?` do within one name, so both are kept; mdatp has nothing for `**`
/// (any number of folders) but at the end, where "everything below" is
/// what a folder exclusion means anyway (Microsoft, "Configure and validate
/// exclusions for Microsoft Defender for Endpoint on Linux": wildcards).
pub fn mdatp_folder(mask: &str) -> Option<String> {
    let mut base = mask.trim_end_matches('/');
    while let Some(shorter) = base.strip_suffix("/**") {
        base = shorter.trim_end_matches('/');
    }
    if base.contains("**") || base.is_empty() {
        return None;
    }
    Some(format!("{base}/"))
}

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
    fn mdatp_keeps_one_folder_wildcards_and_refuses_any_depth_inside_a_path() {
        assert_eq!(mdatp_folder("/opt/app").as_deref(), Some("/opt/app/"));
        assert_eq!(mdatp_folder("/opt/app/").as_deref(), Some("/opt/app/"));
        assert_eq!(
            mdatp_folder("/home/*/cache").as_deref(),
            Some("/home/*/cache/")
        );
        assert_eq!(mdatp_folder("/srv/log?").as_deref(), Some("/srv/log?/"));
        // Everything below a folder is the folder.
        assert_eq!(mdatp_folder("/opt/app/**").as_deref(), Some("/opt/app/"));
        assert_eq!(mdatp_folder("/opt/app/**/").as_deref(), Some("/opt/app/"));
        // Any depth in the middle, or a whole disk, cannot be said.
        assert_eq!(mdatp_folder("/srv/**/tmp"), None);
        assert_eq!(mdatp_folder("/srv/a**b"), None);
        assert_eq!(mdatp_folder("/**"), None);
        assert_eq!(mdatp_folder("/"), None);
    }

    #[test]
    fn everything_else_is_literal() {
        assert_eq!(
            glob_regex("/opt/app (x)/data+1.db"),
            "/opt/app \\(x\\)/data\\+1\\.db"
        );
    }
}
