//! Quoting values into shell command lines: the `sh_quote`, `ps_quote` and
//! `regex_escape` template filters.
//!
//! Exclusion paths come from inventories that MSP staff type by hand, and
//! from settings exported off endpoints: they hold spaces, quotes, `$`, `;`
//! and, pasted from Word or Outlook, curly quotes. Each filter produces a
//! single literal that the target shell cannot reinterpret, whatever the
//! input. Single-quoted forms are used in both shells because they are the
//! only forms with no expansion inside at all.
//!
//! At the crate root, not under `plan`, because two layers that must not
//! depend on each other both quote: the plan's template filters, and the
//! transports and runner, which build their own command lines (the WinRM
//! upload script, an uploaded script's invocation). Neither reaches into
//! the other for it.

/// A POSIX shell word that stands for exactly `value`: `'...'`, with each
/// `'` written as `'\''` (close, escaped quote, reopen).
pub fn sh_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The characters PowerShell treats as a single quote: the ASCII one and
/// U+2018..U+201B (‘ ’ ‚ ‛). Any of them ends a single-quoted string, so
/// each must be doubled inside one.
fn is_ps_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// A PowerShell single-quoted string literal that stands for exactly `value`.
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if is_ps_single_quote(c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `value` as a POSIX extended regular expression matching it literally
/// (ClamAV's `ExcludePath` takes such expressions).
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(
            c,
            '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '|' | '^' | '$' | '\\'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile values an MSP inventory really contains.
    const HOSTILE: &[&str] = &[
        "",
        "plain",
        "D:\\Dentrix Data",
        "it's",
        "$(rm -rf /)",
        "`whoami`",
        "a; b && c | d",
        "\"double\"",
        "new\nline",
        "O\u{2019}Brien\u{2018}s \u{201A}x\u{201B}",
        "100% ${HOME} *.tmp",
    ];

    #[test]
    fn sh_quote_survives_a_real_shell() {
        for value in HOSTILE {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(value)))
                .output()
                .expect("sh runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                *value,
                "quoting {value:?}"
            );
        }
    }

    #[test]
    fn sh_quote_forms() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
    }

    #[test]
    fn ps_quote_doubles_every_kind_of_single_quote() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("O\u{2019}Brien"), "'O\u{2019}\u{2019}Brien'");
        assert_eq!(
            ps_quote("\u{2018}\u{201A}\u{201B}"),
            "'\u{2018}\u{2018}\u{201A}\u{201A}\u{201B}\u{201B}'"
        );
        // Nothing else is special inside PowerShell single quotes.
        assert_eq!(ps_quote("$env:TEMP `n \"x\""), "'$env:TEMP `n \"x\"'");
        assert_eq!(ps_quote(""), "''");
    }

    /// Reads a PowerShell single-quoted literal back the way PowerShell's
    /// tokenizer does: it ends at the first lone quote character.
    fn ps_unquote(literal: &str) -> Option<String> {
        let inner = literal.strip_prefix('\'')?;
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if is_ps_single_quote(c) {
                match chars.peek() {
                    Some(&next) if next == c => {
                        out.push(c);
                        chars.next();
                    }
                    None => return Some(out),
                    Some(_) => return None, // the literal ended early: injection
                }
            } else {
                out.push(c);
            }
        }
        None
    }

    #[test]
    fn ps_quote_round_trips_hostile_values() {
        for value in HOSTILE {
            assert_eq!(
                ps_unquote(&ps_quote(value)).as_deref(),
                Some(*value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn regex_escape_matches_literally() {
        assert_eq!(
            regex_escape("/opt/app (x)/data.db"),
            "/opt/app \\(x\\)/data\\.db"
        );
        assert_eq!(regex_escape("a+b*c?"), "a\\+b\\*c\\?");
        assert_eq!(regex_escape("^$|\\"), "\\^\\$\\|\\\\");
        // grep -E is a POSIX ERE engine like ClamAV's: the escaped form
        // matches the path itself and not a look-alike.
        for (value, other) in [("/opt/a.b", "/opt/axb"), ("/srv/(x)", "/srv/x")] {
            let pattern = format!("^{}$", regex_escape(value));
            let run = |input: &str| {
                std::process::Command::new("grep")
                    .args(["-qE", &pattern])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut child| {
                        use std::io::Write;
                        child.stdin.take().unwrap().write_all(input.as_bytes())?;
                        child.wait()
                    })
                    .unwrap()
                    .success()
            };
            assert!(run(value), "{pattern} should match {value}");
            assert!(!run(other), "{pattern} should not match {other}");
        }
    }
}
