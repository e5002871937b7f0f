//! `become` with sudo: the command line, and the short conversation with
//! sudo on standard error before the script is sent.
//!
//! The command line is fixed and holds nothing secret:
//! `exec sudo -S -p PROMPT -u USER -- /bin/sh -c 'printf MARKER >&2; READER'`,
//! where PROMPT and MARKER are random per command and READER is
//! [`super::wrapper::posix_reader`]. The transport then reads standard
//! error. PROMPT means sudo wants the password: it is written to sudo's
//! standard input, once (a second PROMPT means it was refused). MARKER
//! means the shell runs as the become user: only now is the script written,
//! so the password can never reach the script and the script never reaches
//! sudo. A NOPASSWD rule simply skips the prompt. Anything else before
//! MARKER is sudo talking (no rights, `requiretty`, a PAM prompt this tool
//! cannot answer): the process ending, a second prompt or silence after
//! unknown text ends the step with a message that says which, never a hang.

use std::time::Duration;

use super::{Become, BecomeMethod, ExitStatus, Target};
use crate::quote::sh_quote;

/// How long sudo may be silent after printing something this tool does not
/// recognise (a PAM prompt for a one-time code, say) before the step fails.
pub const UNKNOWN_PROMPT_WAIT: Duration = Duration::from_secs(3);

/// How long the whole conversation may take (PAM, LDAP, a slow disk).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

/// What the transport should do after a piece of sudo's standard error.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet; `unknown`, when sudo printed something this tool does
    /// not answer, is the message to fail with if it stays silent for
    /// [`UNKNOWN_PROMPT_WAIT`].
    Wait { unknown: Option<String> },
    /// Write these bytes (the password and a newline) to standard input.
    Answer(Vec<u8>),
    /// The shell runs as the become user: send the script. `rest` is
    /// standard error that came after the marker (the script's own).
    Started { rest: Vec<u8> },
    /// Stop: the step fails with this message.
    Failed(String),
}

/// One command's conversation with sudo.
pub struct Handshake {
    settings: Become,
    host: String,
    login: String,
    prompt: String,
    marker: String,
    seen: Vec<u8>,
    answered: usize,
}

impl Handshake {
    pub fn new(target: &Target) -> Handshake {
        Handshake {
            settings: target.r#become.clone(),
            host: target.name.clone(),
            login: target
                .user
                .clone()
                .unwrap_or_else(|| "the login user".into()),
            prompt: format!("[orchestrate-sudo-{}]", super::unguessable()),
            marker: format!("orchestrate-became-{}", super::unguessable()),
            seen: Vec::new(),
            answered: 0,
        }
    }

    /// The command line (for a login shell) that runs `reader` as the
    /// become user.
    pub fn line(&self, reader: &str) -> String {
        let BecomeMethod::Sudo = self.settings.method;
        format!(
            "exec sudo -S -p '{}' -u {} -- /bin/sh -c 'printf \"%s\\n\" {} >&2; {reader}'",
            self.prompt,
            sh_quote(&self.settings.user),
            self.marker
        )
    }

    /// Takes the next piece of standard error.
    pub fn feed(&mut self, stderr: &[u8]) -> Next {
        self.seen.extend_from_slice(stderr);
        let marker = format!("{}\n", self.marker);
        if let Some(at) = find(&self.seen, marker.as_bytes()) {
            return Next::Started {
                rest: self.seen[at + marker.len()..].to_vec(),
            };
        }
        let prompts = count(&self.seen, self.prompt.as_bytes());
        if prompts > self.answered {
            if prompts >= 2 {
                return Next::Failed(format!(
                    "sudo refused the password for {} on {}{}",
                    self.login, self.host, " (check the secret named by become.password_secret)"
                ));
            }
            return match &self.settings.password {
                Some(password) => {
                    self.answered = prompts;
                    let mut answer = password.expose().as_bytes().to_vec();
                    answer.push(b'\n');
                    Next::Answer(answer)
                }
                None => Next::Failed(format!(
                    "sudo asks {} on {} for a password and the inventory gives none: set \
                     become.password_secret, or give {} a NOPASSWD sudoers rule",
                    self.login, self.host, self.login
                )),
            };
        }
        Next::Wait {
            unknown: (!self.said().is_empty()).then(|| self.stalled()),
        }
    }

    /// Why the step fails when the process ended before the marker.
    pub fn ended(&self, status: Option<&ExitStatus>) -> String {
        let said = self.said();
        let lower = said.to_lowercase();
        let (login, host, user) = (&self.login, &self.host, &self.settings.user);
        if lower.contains("must have a tty") {
            return format!(
                "sudo on {host} requires a terminal (sudoers `Defaults requiretty`): sorry, you \
                 must have a tty; this tool runs without one: allow it for {login} with \
                 `Defaults:{login} !requiretty`"
            );
        }
        if lower.contains("not in the sudoers")
            || lower.contains("not allowed to")
            || lower.contains("may not run sudo")
        {
            return format!(
                "{login} on {host} may not use sudo to run commands as {user} (sudo said: {said})"
            );
        }
        if matches!(status, Some(ExitStatus::Code(127))) && lower.contains("sudo") {
            return format!("sudo is not installed on {host} ({said}); `become` needs it");
        }
        if count(&self.seen, self.prompt.as_bytes()) > 0 && self.answered > 0 {
            return format!("sudo refused the password for {login} on {host} ({said})");
        }
        let how = match status {
            Some(ExitStatus::Code(code)) => format!("exited with code {code}"),
            Some(ExitStatus::Signal(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".into(),
        };
        format!(
            "becoming {user} with sudo on {host} failed: sudo {how} before the command started{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )
    }

    /// Why the step fails when sudo went silent after unknown text.
    pub fn stalled(&self) -> String {
        format!(
            "sudo on {} asked {} for something this tool cannot answer ({}); become works with a \
             password (become.password_secret) or a NOPASSWD rule",
            self.host,
            self.login,
            self.said()
        )
    }

    /// What sudo printed, without this tool's own prompts, on one line.
    fn said(&self) -> String {
        let text = String::from_utf8_lossy(&self.seen).replace(&self.prompt, " ");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Secret;

    fn handshake(password: Option<&str>) -> Handshake {
        let mut target = crate::transport::test_target(crate::transport::Os::Linux);
        target.user = Some("msp-admin".into());
        target.name = "acme-lnx01".into();
        target.r#become.password = password.map(Secret::new);
        Handshake::new(&target)
    }

    #[test]
    fn the_password_goes_once_in_answer_to_the_prompt_then_the_script() {
        let mut h = handshake(Some("pw-1"));
        let line = h.line("READER");
        assert!(
            line.starts_with("exec sudo -S -p '[orchestrate-sudo-"),
            "{line}"
        );
        assert!(line.contains(" -u 'root' -- /bin/sh -c 'printf"), "{line}");
        assert!(!line.contains("pw-1"));
        let prompt = h.prompt.clone();
        assert_eq!(h.feed(prompt.as_bytes()), Next::Answer(b"pw-1\n".to_vec()));
        let marker = format!("{}\nscript's own", h.marker);
        assert_eq!(
            h.feed(marker.as_bytes()),
            Next::Started {
                rest: b"script's own".to_vec()
            }
        );
    }

    #[test]
    fn refusals_are_named() {
        let mut h = handshake(Some("wrong"));
        let prompt = h.prompt.clone();
        assert!(matches!(h.feed(prompt.as_bytes()), Next::Answer(_)));
        let again = format!("Sorry, try again.\n{prompt}");
        assert_eq!(
            h.feed(again.as_bytes()),
            Next::Failed(
                "sudo refused the password for msp-admin on acme-lnx01 (check the secret named \
                 by become.password_secret)"
                    .into()
            )
        );
        let mut h = handshake(None);
        assert!(matches!(h.feed(prompt.as_bytes()), Next::Wait { .. }));
        let own = h.prompt.clone();
        assert!(matches!(h.feed(own.as_bytes()), Next::Failed(m) if m.contains("gives none")));
        let mut h = handshake(None);
        assert!(matches!(
            h.feed(b"Verification code: "),
            Next::Wait { unknown: Some(m) } if m.contains("cannot answer (Verification code:)")
        ));
        let mut h = handshake(None);
        h.feed(b"sudo: sorry, you must have a tty to run sudo\n");
        assert!(h.ended(Some(&ExitStatus::Code(1))).contains("requiretty"));
        let mut h = handshake(None);
        h.feed(b"msp-admin is not in the sudoers file.\n");
        assert!(
            h.ended(Some(&ExitStatus::Code(1)))
                .starts_with("msp-admin on acme-lnx01 may not use sudo")
        );
    }
}
