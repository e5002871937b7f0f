//! What goes on the wire for a [`Script`], and where temporary files go.
//!
//! SSH carries one command string, which the host's sshd hands to the
//! user's login shell (`$SHELL -c` on POSIX; on Windows OpenSSH, `cmd.exe
//! /c` by default, or whatever `DefaultShell` says). So `sh` scripts go as
//! they are, and PowerShell always goes as `-EncodedCommand` (base64 of
//! UTF-16LE): that survives any quoting of any default shell.

use crate::transport::{Os, Script, Target, TransportError};

pub use crate::transport::{encoded_powershell, temp_path};

/// The command string sent in the SSH `exec` request.
pub fn wire(target: &Target, script: &Script) -> Result<String, TransportError> {
    let windows = target.os == Os::Windows;
    Ok(match script {
        Script::Default(text) if windows => encoded_powershell("powershell", text),
        Script::Default(text) | Script::Sh(text) => text.clone(),
        Script::PowerShell(text) if windows => encoded_powershell("powershell", text),
        Script::PowerShell(text) => encoded_powershell("pwsh", text),
        Script::Cmd(text) if windows => format!("cmd /c {text}"),
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

    #[test]
    fn powershell_is_utf16le_base64() {
        // `powershell -EncodedCommand` of "echo hi" as PowerShell documents it.
        assert_eq!(
            encoded_powershell("powershell", "echo hi"),
            "powershell -NoProfile -NonInteractive -EncodedCommand ZQBjAGgAbwAgAGgAaQA="
        );
    }

    fn target(os: Os) -> Target {
        Target {
            name: "h".into(),
            address: "10.0.0.1".into(),
            port: None,
            os,
            user: None,
            kind: crate::transport::TransportKind::Ssh,
            ssh: Default::default(),
            winrm: Default::default(),
            host_key_policy: Default::default(),
            connect_timeout: std::time::Duration::from_secs(5),
            reboot_command: None,
        }
    }

    #[test]
    fn scripts_per_os() {
        let linux = target(Os::Linux);
        let windows = target(Os::Windows);
        let ps = encoded_powershell("powershell", "Get-Date");
        assert_eq!(wire(&linux, &Script::Default("ls".into())).unwrap(), "ls");
        assert_eq!(wire(&linux, &Script::Sh("a; b".into())).unwrap(), "a; b");
        assert_eq!(
            wire(&windows, &Script::Default("Get-Date".into())).unwrap(),
            ps
        );
        assert_eq!(
            wire(&windows, &Script::PowerShell("Get-Date".into())).unwrap(),
            ps
        );
        assert!(
            wire(&target(Os::Macos), &Script::PowerShell("x".into()))
                .unwrap()
                .starts_with("pwsh -NoProfile -NonInteractive -EncodedCommand ")
        );
        assert_eq!(
            wire(&windows, &Script::Cmd("dir C:\\".into())).unwrap(),
            "cmd /c dir C:\\"
        );
        assert!(matches!(
            wire(&linux, &Script::Cmd("dir".into())),
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
