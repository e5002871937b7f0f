//! The `local` transport: runs steps on the controller itself.
//!
//! It exists for two reasons: an MSP can run a playbook against the machine
//! it sits on, and the runner's tests can drive real processes without a
//! network. Each command runs in its own process group so that a timeout
//! kills everything the command started, not just the shell.
//!
//! The script goes to the shell on standard input ([`super::wrapper`]):
//! any user of this machine can read a process's arguments. Temporary
//! files (`script` steps' copies) live in a directory of the session's own,
//! made 0700 with an unguessable name and removed with the session, and are
//! created exclusively without following symlinks: a name in a shared
//! `$TMPDIR` that someone else could predict would let them plant a
//! symlink and have this tool (often root) write through it.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    BoundedOutput, Command, Connector, Execution, ExitStatus, OutputBuffer, OutputCollector,
    OutputSink, Script, Session, Stream, Target, TransportError, UploadSource, wrapper,
};

/// Opens [`LocalSession`]s; there is nothing to connect to.
#[derive(Debug, Default)]
pub struct LocalConnector;

#[async_trait]
impl Connector for LocalConnector {
    async fn connect(&self, target: &Target) -> Result<Box<dyn Session>, TransportError> {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::Builder::new()
            .prefix("orchestrate-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| {
                TransportError::Other(format!(
                    "host {}: cannot make a private temporary directory in {}: {e}",
                    target.name,
                    std::env::temp_dir().display()
                ))
            })?;
        Ok(Box::new(LocalSession {
            host: target.name.clone(),
            temp,
        }))
    }
}

pub struct LocalSession {
    host: String,
    /// This session's private (0700) directory for temporary files.
    temp: tempfile::TempDir,
}

impl LocalSession {
    fn program(&self, script: &Script) -> Result<tokio::process::Command, TransportError> {
        let (program, args): (&str, Vec<String>) = match script {
            Script::Default(_) | Script::Sh(_) => (
                "sh",
                vec!["-c".into(), wrapper::posix_reader("orchestrate")],
            ),
            Script::PowerShell(_) => ("pwsh", wrapper::powershell_args()),
            Script::Cmd(_) => {
                return Err(TransportError::Unsupported(format!(
                    "host {}: `cmd` steps need Windows; the local transport runs on this controller",
                    self.host
                )));
            }
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env("ORCHESTRATE_HOST", &self.host)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// Reads a pipe to its end, keeping its head and tail and forwarding each
/// piece to the sink as it comes.
async fn drain(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    sink: Option<OutputSink>,
) -> BoundedOutput {
    let mut kept = OutputCollector::new(sink);
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => kept.push(stream, &buf[..n], true),
        }
    }
    let kept: OutputBuffer = match stream {
        Stream::Stdout => kept.stdout,
        Stream::Stderr => kept.stderr,
    };
    kept.finish()
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created with process_group(0); it touches no memory of ours.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

#[async_trait]
impl Session for LocalSession {
    async fn execute(
        &self,
        command: &Command,
        sink: Option<OutputSink>,
    ) -> Result<Execution, TransportError> {
        if command.r#become {
            return Err(TransportError::Unsupported(format!(
                "host {}: `become` is not supported on the local transport; run orchestrate \
                 itself as the user the steps need, or reach this machine over ssh",
                self.host
            )));
        }
        let mut child = self.program(&command.script)?.spawn().map_err(|e| {
            TransportError::Other(format!("host {}: cannot start the shell: {e}", self.host))
        })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let input = Some(wrapper::payload(
            command.script.text(),
            command.stdin.as_deref(),
        ));
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                if let Some(input) = input {
                    let _ = stdin.write_all(&input).await;
                }
                let _ = stdin.shutdown().await;
            }
        });
        let stdout = tokio::spawn(drain(
            child.stdout.take().expect("stdout is piped"),
            Stream::Stdout,
            sink.clone(),
        ));
        let stderr = tokio::spawn(drain(
            child.stderr.take().expect("stderr is piped"),
            Stream::Stderr,
            sink,
        ));

        let waited = match command.timeout {
            Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
            None => Some(child.wait().await),
        };
        let status = match waited {
            Some(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => ExitStatus::Code(code),
                    (None, Some(signal)) => ExitStatus::Signal(signal_name(signal)),
                    (None, None) => ExitStatus::Code(-1),
                }
            }
            Some(Err(e)) => {
                return Err(TransportError::Other(format!(
                    "host {}: waiting for the command failed: {e}",
                    self.host
                )));
            }
            None => {
                kill_group(pid);
                let _ = child.wait().await;
                ExitStatus::TimedOut
            }
        };
        // A background process that kept the pipes open would hold us here
        // forever; after the command itself ended, give the pipes a moment.
        let grace = Duration::from_secs(2);
        let stdout = tokio::time::timeout(grace, stdout).await;
        let stderr = tokio::time::timeout(grace, stderr).await;
        if stdout.is_err() || stderr.is_err() {
            kill_group(pid);
        }
        feeder.abort();
        Ok(Execution {
            status,
            stdout: stdout.ok().and_then(|r| r.ok()).unwrap_or_default(),
            stderr: stderr.ok().and_then(|r| r.ok()).unwrap_or_default(),
        })
    }

    async fn upload(
        &self,
        source: &UploadSource,
        dest: &str,
        mode: u32,
    ) -> Result<(), TransportError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: std::io::Error| {
            TransportError::Other(format!("host {}: cannot write {dest}: {e}", self.host))
        };
        if std::path::Path::new(dest).starts_with(self.temp.path()) {
            // One of our temporary files: created here and now, never through a link.
            let mut options = tokio::fs::OpenOptions::new();
            options
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW);
            let mut file = options.open(dest).await.map_err(fail)?;
            source.copy_to(&mut file).await.map_err(fail)?;
            file.shutdown().await.map_err(fail)?;
            drop(file);
            return tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(fail);
        }
        // Anywhere else: beside the destination, then renamed over it, so
        // a cut upload leaves the good old copy (see `atomic_upload`).
        let unique = super::atomic_upload::unique();
        let temp = super::atomic_upload::temp_beside(super::Os::Linux, dest, &unique);
        let written = async {
            let mut options = tokio::fs::OpenOptions::new();
            options
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW);
            let mut file = options.open(&temp).await?;
            source.copy_to(&mut file).await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).await?;
            tokio::fs::rename(&temp, dest).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written.map_err(fail)
    }

    async fn remove(&self, path: &str) -> Result<(), TransportError> {
        tokio::fs::remove_file(path).await.map_err(|e| {
            TransportError::Other(format!("host {}: cannot remove {path}: {e}", self.host))
        })
    }

    fn temp_path(&self, name: &str) -> String {
        let file = super::temp_path(super::Os::Linux, &super::unguessable(), name);
        let file = file.trim_start_matches("/tmp/");
        self.temp.path().join(file).display().to_string()
    }

    async fn reboot(&self, _timeout: Duration) -> Result<(), TransportError> {
        Err(TransportError::Unsupported(format!(
            "host {}: the local transport cannot reboot (it would reboot this controller); \
             use ssh or winrm for hosts that need a reboot",
            self.host
        )))
    }

    async fn close(&self) {}
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "KILL".into(),
        libc::SIGTERM => "TERM".into(),
        libc::SIGINT => "INT".into(),
        libc::SIGHUP => "HUP".into(),
        libc::SIGSEGV => "SEGV".into(),
        libc::SIGABRT => "ABRT".into(),
        other => other.to_string(),
    }
}
