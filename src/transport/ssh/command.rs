//! What goes on the wire for a [`Script`], and where temporary files go.
//!
//! SSH carries one command string, which the host's sshd hands to the
//! user's login shell (`$SHELL -c` on POSIX; on Windows OpenSSH, `cmd.exe
//! /c` by default, or whatever `DefaultShell` says). That string is on a
//! command line on the host, readable by every user there, so it is only
//! ever a fixed reader ([`wrapper`]); the script itself goes on the
//! channel's standard input. `cmd` steps too: cmd.exe is started reading
//! commands from stdin with echo off ([`wrapper::cmd_line`]).

use crate::transport::wrapper;
use crate::transport::{Command, Os, Script, Target, TransportError};

pub use crate::transport::temp_path;

/// What is sent for one command: the exec request's string, and what goes
/// to the command's standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub line: String,
    /// The script for the reader, then the command's own stdin.
    pub input: Vec<u8>,
}

/// The command string sent in the SSH `exec` request, and what follows on
/// stdin. `marker` is the kill marker ([`super::exec::marker`]).
pub fn wire(target: &Target, command: &Command, marker: &str) -> Result<Wire, TransportError> {
    let windows = target.os == Os::Windows;
    let stdin = command.stdin.as_deref();
    let read = |line: String, text: &str| Wire {
        line,
        input: wrapper::payload(text, stdin),
    };
    Ok(match &command.script {
        // The marker goes in the payload's header: the bootstrap claims a
        // pid file by it (see `wrapper::payload_marked`).
        Script::Default(text) | Script::PowerShell(text) if windows => Wire {
            line: wrapper::powershell_line("powershell"),
            input: wrapper::payload_marked(text, stdin, marker),
        },
        Script::Default(text) | Script::Sh(text) => read(wrapper::posix_exec_line(marker), text),
        // pwsh under a shell that waits for it, the marker on the shell's
        // command line: killing that shell's group kills pwsh too.
        Script::PowerShell(text) => read(
            format!(
                "exec /bin/sh -c '{}; exit $? # {marker}'",
                wrapper::powershell_line("pwsh")
            ),
            text,
        ),
        Script::Cmd(_) if stdin.is_some() => {
            return Err(TransportError::Unsupported(format!(
                "host {}: a `cmd` step reads its commands from stdin and takes no stdin data \
                 of its own; use `powershell`",
                target.name
            )));
        }
        Script::Cmd(text) if windows => Wire {
            line: wrapper::cmd_line(marker),
            input: wrapper::cmd_payload(text),
        },
        Script::Cmd(_) => {
            return Err(TransportError::Unsupported(format!(
                "host {}: `cmd` steps need Windows, and the inventory says this host runs {}",
                target.name, target.os
            )));
        }
    })
}

/// The SFTP form of a path: Windows OpenSSH wants `/C:/dir/file`.
pub fn sftp_path(os: Os, path: &str) -> String {
    if os == Os::Windows {
        let forward = path.replace('\\', "/");
        let bytes = forward.as_bytes();
        if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
            return format!("/{forward}");
        }
        return forward;
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(os: Os) -> Target {
        crate::transport::test_target(os)
    }

    fn wire_of(target: &Target, script: Script, marker: &str) -> Result<Wire, TransportError> {
        wire(target, &Command::new(script), marker)
    }

    #[test]
    fn scripts_go_on_stdin_and_only_a_fixed_reader_on_the_line() {
        let linux = target(Os::Linux);
        let windows = target(Os::Windows);
        let secret = "hunter2-secret";
        let sh = wire_of(
            &linux,
            Script::Sh(format!("echo {secret}")),
            "orchestrate-1-2",
        )
        .unwrap();
        assert_eq!(sh.line, wrapper::posix_exec_line("orchestrate-1-2"));
        assert_eq!(sh.input, wrapper::payload("echo hunter2-secret", None));
        let run = wire_of(&linux, Script::Default("ls".into()), "m").unwrap();
        assert_eq!(run.line, wrapper::posix_exec_line("m"));
        for script in [
            Script::Default(secret.into()),
            Script::PowerShell(secret.into()),
            Script::Cmd(format!("echo {secret}")),
        ] {
            let ps = wire_of(&windows, script, "orchestrate-3-end").unwrap();
            assert!(!ps.line.contains(secret), "{}", ps.line);
            assert!(String::from_utf8_lossy(&ps.input).contains(secret));
        }
        assert_eq!(
            wire_of(&windows, Script::PowerShell("x".into()), "m")
                .unwrap()
                .line,
            wrapper::powershell_line("powershell")
        );
        let pwsh = wire_of(
            &target(Os::Macos),
            Script::PowerShell("x".into()),
            "m-1-end",
        )
        .unwrap();
        assert_eq!(
            pwsh.line,
            format!(
                "exec /bin/sh -c '{}; exit $? # m-1-end'",
                wrapper::powershell_line("pwsh")
            )
        );
        // On Windows the marker is in the payload's header, for the bootstrap.
        let ps = wire_of(
            &windows,
            Script::PowerShell("x".into()),
            "orchestrate-4-end",
        )
        .unwrap();
        assert!(ps.input.starts_with(b"1 orchestrate-4-end\nx\n"));
        let cmd = wire_of(
            &windows,
            Script::Cmd("dir C:\\".into()),
            "orchestrate-3-end",
        )
        .unwrap();
        assert_eq!(cmd.line, "cmd /d /q /k rem orchestrate-3-end");
        assert_eq!(cmd.input, b"dir C:\\\r\n\r\nexit %ERRORLEVEL%\r\n".to_vec());
        assert!(matches!(
            wire_of(&linux, Script::Cmd("dir".into()), "m"),
            Err(TransportError::Unsupported(_))
        ));
    }

    #[test]
    fn windows_paths() {
        assert_eq!(
            sftp_path(Os::Windows, "C:\\Windows\\Temp\\a.ps1"),
            "/C:/Windows/Temp/a.ps1"
        );
        assert_eq!(sftp_path(Os::Linux, "/tmp/a b"), "/tmp/a b");
        assert_eq!(
            temp_path(Os::Windows, "1", "x y.ps1"),
            "C:\\Windows\\Temp\\orchestrate-1-x_y.ps1"
        );
        assert_eq!(temp_path(Os::Macos, "1", "s.sh"), "/tmp/orchestrate-1-s.sh");
    }
}
