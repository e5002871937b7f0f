//! What goes on the wire for a [`Script`], and where temporary files go.
//!
//! SSH carries one command string, which the host's sshd hands to the
//! user's login shell (`$SHELL -c` on POSIX; on Windows OpenSSH, `cmd.exe
//! /c` by default, or whatever `DefaultShell` says). That string is on a
//! command line on the host, readable by every user there, so it is only
//! ever a fixed reader ([`wrapper`]); the script itself goes on the
//! channel's standard input. `cmd` steps are the exception: cmd.exe reads no
//! script from stdin without echoing prompts, so they stay on the command
//! line (Windows shows another user's command line only to administrators).

use crate::transport::wrapper;
use crate::transport::{Os, Script, Target, TransportError};

pub use crate::transport::temp_path;

/// What is sent for one command: the exec request's string, and what goes
/// to the command's standard input before the command's own data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    pub line: String,
    /// The script for the reader; the command's own stdin follows it.
    pub script: Option<String>,
}

/// The command string sent in the SSH `exec` request, and the script that
/// follows on stdin. `marker` is the kill marker ([`super::exec::marker`]).
pub fn wire(target: &Target, script: &Script, marker: &str) -> Result<Wire, TransportError> {
    let windows = target.os == Os::Windows;
    let read = |line: String, text: &str| Wire {
        line,
        script: Some(text.to_string()),
    };
    Ok(match script {
        Script::Default(text) | Script::PowerShell(text) if windows => {
            read(wrapper::powershell_line("powershell"), text)
        }
        Script::Default(text) | Script::Sh(text) => read(wrapper::posix_exec_line(marker), text),
        Script::PowerShell(text) => read(wrapper::powershell_line("pwsh"), text),
        Script::Cmd(text) if windows => Wire {
            line: format!("cmd /c {text}"),
            script: None,
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

    #[test]
    fn scripts_go_on_stdin_and_only_a_fixed_reader_on_the_line() {
        let linux = target(Os::Linux);
        let windows = target(Os::Windows);
        let secret = "hunter2-secret";
        let sh = wire(
            &linux,
            &Script::Sh(format!("echo {secret}")),
            "orchestrate-1-2",
        )
        .unwrap();
        assert_eq!(sh.line, wrapper::posix_exec_line("orchestrate-1-2"));
        assert_eq!(sh.script.as_deref(), Some("echo hunter2-secret"));
        let run = wire(&linux, &Script::Default("ls".into()), "m").unwrap();
        assert_eq!(run.line, wrapper::posix_exec_line("m"));
        for script in [
            Script::Default(secret.into()),
            Script::PowerShell(secret.into()),
        ] {
            let ps = wire(&windows, &script, "m").unwrap();
            assert_eq!(ps.line, wrapper::powershell_line("powershell"));
            assert_eq!(ps.script.as_deref(), Some(secret));
        }
        assert_eq!(
            wire(&target(Os::Macos), &Script::PowerShell("x".into()), "m")
                .unwrap()
                .line,
            wrapper::powershell_line("pwsh")
        );
        assert_eq!(
            wire(&windows, &Script::Cmd("dir C:\\".into()), "m")
                .unwrap()
                .line,
            "cmd /c dir C:\\"
        );
        assert!(matches!(
            wire(&linux, &Script::Cmd("dir".into()), "m"),
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
