//! Who is logged on to a host, asked right before it reboots: a reboot
//! cuts every session, and on a domain controller, an RDS host or a
//! workstation in use that is someone's unsaved work. What is found goes
//! with the reboot (the `rebooting` event, hence the journal and the
//! report), into the question of `reboot: ask`, and decides
//! `reboot_with_users`.
//!
//! Asked with the tools the OS ships, read the way their output is laid
//! out: Windows `quser` (query user; Microsoft, "query user" command
//! reference: one header line, then USERNAME SESSIONNAME ID STATE IDLE
//! LOGON, the current session marked `>`, SESSIONNAME empty for a
//! disconnected session; exit 1 and "No User exists for *" when nobody
//! is), POSIX `who` (POSIX.1 `who`: name, terminal, time per login). Only
//! the name and the session or terminal are kept; the header and message
//! texts are localised, so the exit code and the columns' order are what
//! is read, never a word. A host where the question cannot be answered
//! (no `quser` on Windows Home, no `who` in a minimal image, a timeout)
//! says why instead: that is recorded too, and `reboot_with_users:
//! refuse` then does not reboot.

use std::time::Duration;

use crate::transport::{Command, ExitStatus, Script, Session};

/// The longest the question may take; a reboot is not held up longer.
const ASK_FOR: Duration = Duration::from_secs(30);

/// Who is logged on, or why that is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LoggedOn {
    /// Each session as `name (session, state)`; empty: nobody.
    Users(Vec<String>),
    Unknown(String),
}

impl LoggedOn {
    /// For a question or a message: "logged on: a, b", "nobody is logged
    /// on", "who is logged on is not known (why)".
    pub(super) fn describe(&self) -> String {
        match self {
            LoggedOn::Users(users) if users.is_empty() => "nobody is logged on".into(),
            LoggedOn::Users(users) => format!("logged on: {}", users.join(", ")),
            LoggedOn::Unknown(why) => format!("who is logged on is not known ({why})"),
        }
    }

    /// Somebody is, or it cannot be told.
    pub(super) fn maybe_someone(&self) -> bool {
        !matches!(self, LoggedOn::Users(users) if users.is_empty())
    }
}

/// Asks the host. Never fails: what went wrong is the answer.
pub(super) async fn logged_on(session: &dyn Session, windows: bool) -> LoggedOn {
    let script = if windows {
        // quser.exe is in System32 on Pro, Enterprise and Server editions,
        // not on Home. Its stderr ("No User exists for *") is merged in and
        // ignored: exit 1 says it.
        Script::PowerShell(
            "$q = Join-Path $env:SystemRoot 'System32\\quser.exe'\n\
             if (-not (Test-Path -LiteralPath $q)) { Write-Output 'there is no quser.exe on this host'; exit 3 }\n\
             & $q 2>&1 | ForEach-Object { [string]$_ }\n\
             exit $LASTEXITCODE\n"
                .into(),
        )
    } else {
        Script::Sh("LC_ALL=C who\n".into())
    };
    let mut command = Command::new(script);
    command.timeout = Some(ASK_FOR);
    let execution = match session.execute(&command, None).await {
        Ok(execution) => execution,
        Err(e) => return LoggedOn::Unknown(e.to_string()),
    };
    let text = execution.stdout.to_text();
    let code = match execution.status {
        ExitStatus::Code(code) => code,
        ExitStatus::TimedOut => {
            return LoggedOn::Unknown(format!("no answer within {}s", ASK_FOR.as_secs()));
        }
        ExitStatus::Signal(s) => return LoggedOn::Unknown(format!("killed by SIG{s}")),
    };
    if windows {
        parse_quser(code, &text)
    } else {
        parse_who(code, &text)
    }
}

/// `quser`'s exit code and output.
pub(super) fn parse_quser(code: i32, text: &str) -> LoggedOn {
    match code {
        0 => LoggedOn::Users(
            text.lines()
                .skip(1) // the header
                .filter_map(|line| {
                    let fields: Vec<&str> = line
                        .trim_start_matches(['>', ' '])
                        .split_whitespace()
                        .collect();
                    let (name, rest) = fields.split_first()?;
                    // A disconnected session has no SESSIONNAME: the ID
                    // (a number) comes right after the name.
                    let (session, state) = match rest {
                        [id, state, ..] if id.parse::<u32>().is_ok() => (None, *state),
                        [session, _id, state, ..] => (Some(*session), *state),
                        _ => return Some(name.to_string()),
                    };
                    Some(match session {
                        Some(session) => format!("{name} ({session}, {state})"),
                        None => format!("{name} ({state})"),
                    })
                })
                .collect(),
        ),
        1 => LoggedOn::Users(Vec::new()),
        _ => LoggedOn::Unknown(first_line(text, code, "quser")),
    }
}

/// `who`'s exit code and output.
pub(super) fn parse_who(code: i32, text: &str) -> LoggedOn {
    if code != 0 {
        return LoggedOn::Unknown(first_line(text, code, "who"));
    }
    LoggedOn::Users(
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                Some(match fields.next() {
                    Some(terminal) => format!("{name} ({terminal})"),
                    None => name.to_string(),
                })
            })
            .collect(),
    )
}

fn first_line(text: &str, code: i32, tool: &str) -> String {
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("{tool} exited with {code}: {line}"),
        None => format!("{tool} exited with {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quser_lists_each_session_with_its_state_a_disconnected_one_without_a_session_name() {
        let text = " USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME\r\n\
                    >alice                 console             1  Active      none   12/2/2026 8:01 AM\r\n \
                    bob                   rdp-tcp#3           2  Active          5  12/2/2026 7:40 AM\r\n \
                    carol                                     3  Disc         1:02  12/1/2026 5:10 PM\r\n";
        assert_eq!(
            parse_quser(0, text),
            LoggedOn::Users(vec![
                "alice (console, Active)".into(),
                "bob (rdp-tcp#3, Active)".into(),
                "carol (Disc)".into()
            ])
        );
    }

    #[test]
    fn quser_exit_1_is_nobody_in_any_language_and_other_codes_are_unknown() {
        assert_eq!(
            parse_quser(1, "Aucun utilisateur n'existe pour *\r\n"),
            LoggedOn::Users(vec![])
        );
        assert_eq!(
            parse_quser(3, "there is no quser.exe on this host\r\n").describe(),
            "who is logged on is not known (quser exited with 3: there is no quser.exe on this host)"
        );
    }

    #[test]
    fn who_lists_each_login_with_its_terminal() {
        let text = "alice    pts/0        2026-12-02 08:01 (10.0.0.5)\nroot     tty1         2026-12-01 17:00\n";
        let found = parse_who(0, text);
        assert_eq!(
            found,
            LoggedOn::Users(vec!["alice (pts/0)".into(), "root (tty1)".into()])
        );
        assert_eq!(found.describe(), "logged on: alice (pts/0), root (tty1)");
        assert_eq!(parse_who(0, "").describe(), "nobody is logged on");
        assert!(!parse_who(0, "").maybe_someone());
        assert!(parse_who(127, "sh: who: not found\n").maybe_someone());
    }
}
