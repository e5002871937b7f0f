//! How files reach an SSH host: one SFTP session per transfer, closed right
//! after it (a host at `MaxSessions 1` has no channel to spare for an idle
//! one), and an upload written beside its destination, checked on the host
//! and only then renamed over it, so a cut upload leaves the old copy. The
//! one exception is this session's own unguessable temporary paths, which
//! are written in place, created exclusively. The copy beside the
//! destination has a random name (hosts sharing a folder, a copy a cut run
//! left), and a write the host refuses half-way (a full disk) removes it
//! at once.

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::AsyncWriteExt;

use super::{CHANNEL_WAIT, Live, SshSession, command, note};
use crate::transport::atomic_upload::{self, Expected};
use crate::transport::{Command, ExitStatus, Os, Script, Session, TransportError, UploadSource};

impl SshSession {
    /// `Session::upload`: see the module comment.
    pub(super) async fn upload_file(
        &self,
        source: &UploadSource,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        let fresh = self.fresh_temp.lock().expect("not poisoned").remove(dest);
        if fresh {
            // One of this session's unguessable temporary paths: created
            // exclusively, so a file or link planted there is refused.
            return match self.sftp_write(source, dest, dest, mode).await {
                Ok(()) => Ok(()),
                Err(failed) => Err(self.drop_partial(dest, failed).await),
            };
        }
        // Beside the destination, checked, then renamed over it: a cut
        // upload leaves the good old copy (see `atomic_upload`).
        let temp = atomic_upload::temp_beside(self.target.os, dest, &atomic_upload::unique());
        note(&self.partial_uploads, &temp, true);
        if let Err(failed) = self.sftp_write(source, &temp, dest, mode).await {
            return Err(self.drop_partial(&temp, failed).await);
        }
        let expected = Expected {
            size: source.len(),
            sha256: source.sha256_hex(),
        };
        self.check_and_replace(&temp, dest, &expected).await
    }

    /// After a failed write of `path` on a connection that still works (a
    /// full disk, a quota), removes the partial copy at once: left there, it
    /// would keep the disk full. Only a file this upload created is removed
    /// (never one that refused the exclusive creation); a lost connection
    /// keeps the copy's name for the clean-up after a reconnect.
    async fn drop_partial(&self, path: &str, failed: WriteFailed) -> TransportError {
        let TransportError::Other(why) = failed.error else {
            return failed.error;
        };
        if !failed.created {
            note(&self.partial_uploads, path, false);
            return TransportError::Other(why);
        }
        match self.remove_file(path).await {
            Ok(()) => TransportError::Other(format!("{why}; its partial copy was removed")),
            Err(e) => TransportError::Other(format!(
                "{why}; its partial copy {path} is left on the host ({e})"
            )),
        }
    }

    /// `Session::remove`, over a fresh SFTP session.
    pub(super) async fn remove_file(&self, path: &str) -> Result<(), TransportError> {
        let live = self.current().await;
        let sftp = self.sftp(&live).await?;
        let removed = sftp
            .remove_file(command::sftp_path(self.target.os, path))
            .await;
        let _ = sftp.close().await;
        // A file that is not there is as good as removed (`rm -f`): an
        // upload cut before its file was created leaves nothing.
        let removed = match removed {
            Err(russh_sftp::client::error::Error::Status(status))
                if status.status_code == russh_sftp::protocol::StatusCode::NoSuchFile =>
            {
                Ok(())
            }
            other => other,
        };
        if removed.is_ok() {
            // A partial copy removed is no longer left behind.
            note(&self.partial_uploads, path, false);
        }
        removed.map_err(|e| {
            TransportError::Other(format!("host {}: cannot remove {path}: {e}", self.host()))
        })
    }

    /// A fresh SFTP session; the caller closes it when done.
    pub(super) async fn sftp(&self, live: &Live) -> Result<SftpSession, TransportError> {
        let channel = self.open_channel(live, CHANNEL_WAIT).await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.lost(e))?;
        let config = russh_sftp::client::Config {
            request_timeout_secs: SFTP_REQUEST_LIMIT.as_secs(),
            ..Default::default()
        };
        SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map_err(|e| {
                TransportError::Other(format!(
                    "host {}: cannot start SFTP ({e}); check that sshd has an sftp Subsystem",
                    self.host()
                ))
            })
    }

    /// Writes `contents` to `path` over a fresh SFTP session, with `mode`
    /// (POSIX), and closes the session whatever happened.
    async fn sftp_write(
        &self,
        source: &UploadSource,
        path: &str,
        shown_as: &str,
        mode: u32,
    ) -> Result<(), WriteFailed> {
        let live = self.current().await;
        let sftp = self.sftp(&live).await.map_err(WriteFailed::before)?;
        let fail = |e: &dyn std::fmt::Display| explain_sftp_failure(&e.to_string());
        let attrs = FileAttributes {
            permissions: self.target.os.is_posix().then_some(mode & 0o7777),
            ..Default::default()
        };
        let path = command::sftp_path(self.target.os, path);
        let mut created = false;
        let written = async {
            let mut file = sftp
                .open_with_flags_and_attributes(
                    path.clone(),
                    // Every path written here is new (a fresh temporary
                    // path, or a unique one beside the destination): created
                    // exclusively, never through a planted file or link.
                    OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                    attrs.clone(),
                )
                .await
                .map_err(|e| fail(&e))?;
            created = true;
            source.copy_to(&mut file).await.map_err(|e| fail(&e))?;
            file.shutdown().await.map_err(|e| fail(&e))?;
            if self.target.os.is_posix() {
                // The umask applied at creation; set the mode exactly.
                sftp.set_metadata(path, attrs).await.map_err(|e| fail(&e))?;
            }
            Ok::<(), String>(())
        }
        .await;
        let _ = sftp.close().await;
        let error = match written {
            Ok(()) => return Ok(()),
            Err(e) if self.broke(&live).await => self.lost(format!("uploading {shown_as}: {e}")),
            Err(e) => TransportError::Other(format!(
                "host {}: cannot write {shown_as}: {e}",
                self.host()
            )),
        };
        Err(WriteFailed { error, created })
    }

    /// Runs the check-and-rename of an upload's temporary copy on the host.
    async fn check_and_replace(
        &self,
        temp: &str,
        dest: &str,
        expected: &Expected,
    ) -> Result<(), TransportError> {
        let script = match self.target.os {
            Os::Windows => Script::PowerShell(atomic_upload::powershell_check_and_replace(
                temp, dest, expected,
            )),
            _ => Script::Sh(atomic_upload::sh_check_and_replace(temp, dest, expected)),
        };
        let done = self.execute(&Command::new(script), None).await?;
        // Renamed into place, or removed by the check: no longer partial.
        note(&self.partial_uploads, temp, false);
        if done.status == ExitStatus::Code(0) {
            return Ok(());
        }
        Err(TransportError::Other(format!(
            "host {}: the upload to {dest} did not check out, so {dest} was left as it was: {}",
            self.host(),
            String::from_utf8_lossy(&done.stderr).trim()
        )))
    }
}

/// How long one SFTP request may wait for its answer. russh-sftp's default
/// is 10 s, which a stall the connection itself survives (keepalives
/// allow 45 s: a Wi-Fi drop, a VPN renegotiating), or 16 writes of 32 KiB
/// in flight on a link under 50 KB/s, would fail; a lost connection ends
/// the requests sooner, and a step's `timeout` bounds the whole upload.
/// What this still catches is a live connection whose SFTP server hangs
/// (a hung network mount).
const SFTP_REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A write that failed, and whether it had created its file (so there is
/// a partial copy of this upload's own to remove).
struct WriteFailed {
    error: TransportError,
    created: bool,
}

impl WriteFailed {
    /// Failed before any file was opened.
    fn before(error: TransportError) -> WriteFailed {
        WriteFailed {
            error,
            created: false,
        }
    }
}

/// OpenSSH's sftp-server answers a bare `Failure` for every error it has no
/// SFTP code for (`errno_to_portable` in its `sftp-server.c`): a full disk,
/// a quota, a file of that name already there. russh-sftp shows that as
/// "Failure: Failure", which tells nobody what to do; say what to check.
fn explain_sftp_failure(error: &str) -> String {
    // A refused open or setstat reads "Failure: Failure" (code and
    // message); a refused write, only the message.
    let error = error.trim_end();
    if error == "Timeout" {
        return format!(
            "{error} (the host's SFTP server answered no request for {} s)",
            SFTP_REQUEST_LIMIT.as_secs()
        );
    }
    if error == "Failure" || error.ends_with("Failure: Failure") {
        format!(
            "{error} (the SFTP server gave no reason: check the host's free space and quota, \
             that the login user can write to that folder, and that no file of that name is in the way)"
        )
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::explain_sftp_failure;

    #[test]
    fn a_bare_sftp_failure_says_what_to_check() {
        let said = explain_sftp_failure("Failure: Failure");
        assert!(said.contains("free space"), "{said}");
        assert!(said.contains("can write to that folder"), "{said}");
        let said = explain_sftp_failure("Failure");
        assert!(said.contains("free space"), "a refused write: {said}");
        let said = explain_sftp_failure("Timeout");
        assert!(said.contains("answered no request for 120 s"), "{said}");
        assert_eq!(
            explain_sftp_failure("No such file: gone"),
            "No such file: gone"
        );
    }
}
