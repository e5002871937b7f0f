//! What a WinRM session does with its shell: run a command to its end (or its
//! deadline), upload and remove files through PowerShell, and reboot.
//!
//! Kept apart from mod.rs, which owns the connection and the shell, so each
//! file reads on its own: this one is the step-level protocol (Command, Send,
//! Receive polls, Signal, Delete) and the PowerShell it sends.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use super::{CallError, RECEIVE_WAIT, REQUEST_WAIT, State, WinrmSession, clixml, wsman};
use crate::transport::{
    BoundedOutput, Execution, ExitStatus, OutputCollector, OutputSink, Stream, TransportError,
    UploadSource,
};

/// What a command reads on stdin.
pub(super) enum Stdin<'a> {
    /// Nothing: stdin is the console's, closed.
    Closed,
    Bytes(&'a [u8]),
    /// The contents as base64 lines (what [`upload_script`] reads), one per Send.
    Base64Lines(UploadContents<'a>),
}

/// What an upload sends: a file read in chunks.
#[derive(Clone, Copy)]
pub(super) enum UploadContents<'a> {
    File(&'a UploadSource),
}

/// One line of the upload stream: base64 of at most [`UPLOAD_LINE`] bytes.
fn base64_line(piece: &[u8]) -> Vec<u8> {
    let mut line = B64.encode(piece).into_bytes();
    line.push(b'\n');
    line
}

/// stdin bytes per Send message (base64 in the envelope: ~87 KB).
const SEND_CHUNK: usize = 64 * 1024;
/// Upload bytes per base64 line fed to the upload script.
const UPLOAD_LINE: usize = 48 * 1024;

/// `powershell -EncodedCommand` with the script as base64 of UTF-16LE.
pub fn encoded_powershell(script: &str) -> String {
    crate::transport::encoded_powershell("powershell", script)
}

/// A PowerShell single-quoted string (curly quotes doubled too).
fn ps_quote(text: &str) -> String {
    crate::quote::ps_quote(text)
}

/// Writes base64 lines from stdin to `temp` beside `path`, and, if the
/// copy's SHA-256 is `want`, moves it over `path` and prints the hash (see
/// `atomic_upload`: a cut or altered upload leaves `path` as it was).
/// (The first line names the helper for the test endpoint, which has no
/// PowerShell; to PowerShell it is a comment.)
fn upload_script(path: &str, temp: &str, want: &str) -> String {
    format!(
        r#"#orchestrate-helper: upload
$ErrorActionPreference = 'Stop'
$path = {}
$tmp = {}
$want = '{want}'
$dir = [System.IO.Path]::GetDirectoryName($path)
if ($dir) {{ [void][System.IO.Directory]::CreateDirectory($dir) }}
$sha = [System.Security.Cryptography.SHA256]::Create()
$fs = [System.IO.File]::Create($tmp)
try {{
    foreach ($line in $input) {{
        if ($line) {{
            $bytes = [System.Convert]::FromBase64String($line)
            [void]$sha.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)
            $fs.Write($bytes, 0, $bytes.Length)
        }}
    }}
}} finally {{ $fs.Close() }}
[void]$sha.TransformFinalBlock([byte[]]@(), 0, 0)
$got = [System.BitConverter]::ToString($sha.Hash).Replace('-', '').ToLowerInvariant()
if ($got -ne $want) {{
    Remove-Item -LiteralPath $tmp -Force
    throw "the copy on the host has SHA-256 $got, expected $want"
}}
Move-Item -LiteralPath $tmp -Destination $path -Force
$got
"#,
        ps_quote(path),
        ps_quote(temp)
    )
}

fn remove_script(path: &str) -> String {
    format!(
        "#orchestrate-helper: remove\n$ErrorActionPreference = 'Stop'\n$path = {}\n\
         if (Test-Path -LiteralPath $path) {{ Remove-Item -LiteralPath $path -Force }}\n",
        ps_quote(path)
    )
}

impl WinrmSession {
    fn lost(&self, what: &str, m: String) -> TransportError {
        TransportError::ConnectionLost(format!("host {}: {what}: {m}", self.ep.host))
    }

    fn refused(&self, what: &str, f: wsman::Fault) -> TransportError {
        TransportError::Other(format!("host {}: WinRM refused {what}: {f}", self.ep.host))
    }

    /// Starts `line` in the shell, re-creating the shell once if the
    /// endpoint no longer has it.
    async fn start(
        &self,
        st: &mut State,
        line: &str,
        console_stdin: bool,
    ) -> Result<(String, String), TransportError> {
        for attempt in 0..2 {
            let shell = self.shell(st).await?;
            let request = wsman::command(
                &self.ep.url,
                &shell,
                line,
                console_stdin,
                REQUEST_WAIT.as_secs_f64(),
            );
            match self.call(st, request, REQUEST_WAIT, false).await {
                Ok(answer) => {
                    let id = wsman::parse_command_id(&answer).map_err(|m| {
                        TransportError::Other(format!("host {}: {m}", self.ep.host))
                    })?;
                    return Ok((shell, id));
                }
                Err(CallError::Fault(f))
                    if attempt == 0 && f.code == Some(wsman::FAULT_SHELL_NOT_FOUND) =>
                {
                    tracing::debug!(host = %self.ep.host, "WinRM shell gone; opening a new one");
                    st.shell = None;
                }
                Err(CallError::Fault(f)) => return Err(self.refused("the command", f)),
                Err(CallError::Broken(m)) => return Err(self.lost("starting the command", m)),
                Err(CallError::Transport(t)) => return Err(t),
            }
        }
        unreachable!("the loop returns")
    }

    /// Runs one command line to its end or its deadline.
    pub(super) async fn run(
        &self,
        st: &mut State,
        line: &str,
        stdin: Stdin<'_>,
        timeout: Option<Duration>,
        sink: Option<OutputSink>,
        powershell: bool,
    ) -> Result<Execution, TransportError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let closed = matches!(stdin, Stdin::Closed);
        let (shell, id) = self.start(st, line, closed).await?;
        match stdin {
            Stdin::Closed => {}
            Stdin::Bytes(data) => {
                let mut pieces: Vec<&[u8]> = data.chunks(SEND_CHUNK).collect();
                if pieces.is_empty() {
                    pieces.push(&[]);
                }
                let last = pieces.len() - 1;
                for (i, piece) in pieces.into_iter().enumerate() {
                    if !self.send(st, &shell, &id, piece, i == last).await? {
                        break;
                    }
                }
            }
            Stdin::Base64Lines(UploadContents::File(source)) => {
                let unreadable = |e: std::io::Error| {
                    TransportError::Other(format!(
                        "host {}: cannot read {}: {e}",
                        self.ep.host,
                        source.path().display()
                    ))
                };
                let mut reader = source.open().await.map_err(unreadable)?;
                while let Some(piece) = reader
                    .next_chunk_of(UPLOAD_LINE)
                    .await
                    .map_err(unreadable)?
                {
                    let line = base64_line(piece);
                    if !self.send(st, &shell, &id, &line, false).await? {
                        break;
                    }
                }
                self.send(st, &shell, &id, &[], true).await?;
            }
        }
        let mut output = OutputCollector::new(sink);
        let code = loop {
            let wait = match deadline {
                None => RECEIVE_WAIT,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.kill(st, &shell, &id).await;
                        let mut done = Execution::collected(ExitStatus::TimedOut, output);
                        if let Some(text) = clixml::decode(&done.stderr) {
                            done.stderr = BoundedOutput::whole(text);
                        }
                        return Ok(done);
                    }
                    left.min(RECEIVE_WAIT).max(Duration::from_millis(500))
                }
            };
            let request = wsman::receive(&self.ep.url, &shell, &id, wait.as_secs_f64());
            match self.call(st, request, wait + REQUEST_WAIT, false).await {
                Ok(answer) => {
                    let received = wsman::parse_receive(&answer).map_err(|m| {
                        TransportError::Other(format!("host {}: {m}", self.ep.host))
                    })?;
                    for (stream, data) in received.chunks {
                        // PowerShell's stderr is one CLIXML document:
                        // shown once it is complete and readable.
                        let forward = stream == Stream::Stdout || !powershell;
                        output.push(stream, &data, forward);
                    }
                    if let Some(code) = received.exit_code {
                        break code;
                    }
                }
                Err(CallError::Fault(f)) if f.code == Some(wsman::FAULT_OPERATION_TIMEOUT) => {}
                Err(CallError::Fault(f)) => return Err(self.refused("a Receive", f)),
                Err(CallError::Broken(m)) => {
                    return Err(self.lost("while the command ran (its outcome is unknown)", m));
                }
                Err(CallError::Transport(t)) => return Err(t),
            }
        };
        // Tell the service we are done with the command (pywinrm and winrs
        // do the same); a failure here changes nothing for the step.
        let request =
            wsman::signal_terminate(&self.ep.url, &shell, &id, REQUEST_WAIT.as_secs_f64());
        let _ = self.call(st, request, REQUEST_WAIT, true).await;
        let sink = output.sink();
        let mut done = Execution::collected(ExitStatus::Code(code), output);
        if powershell && let Some(text) = clixml::decode(&done.stderr) {
            // Decoded text is shorter than its CLIXML, which was bounded.
            done.stderr = BoundedOutput::whole(text);
        }
        if powershell
            && !done.stderr.is_empty()
            && let Some(sink) = sink
        {
            sink.offer(Stream::Stderr, Bytes::copy_from_slice(&done.stderr));
        }
        Ok(done)
    }

    /// Sends one piece of stdin; `false` if the command no longer takes it.
    async fn send(
        &self,
        st: &mut State,
        shell: &str,
        id: &str,
        piece: &[u8],
        last: bool,
    ) -> Result<bool, TransportError> {
        let request = wsman::send(
            &self.ep.url,
            shell,
            id,
            piece,
            last,
            REQUEST_WAIT.as_secs_f64(),
        );
        match self.call(st, request, REQUEST_WAIT, false).await {
            Ok(_) => Ok(true),
            // The command may have ended without reading it all:
            // its exit status is still what matters.
            Err(CallError::Fault(f)) => {
                tracing::debug!(host = %self.ep.host, "stdin not taken: {f}");
                Ok(false)
            }
            Err(CallError::Broken(m)) => Err(self.lost("sending stdin", m)),
            Err(CallError::Transport(t)) => Err(t),
        }
    }

    /// A timed-out command: Signal terminate, then delete the shell (which
    /// ends whatever the command started), so the next step gets a fresh one.
    async fn kill(&self, st: &mut State, shell: &str, id: &str) {
        let request = wsman::signal_terminate(&self.ep.url, shell, id, 10.0);
        let _ = self.call(st, request, Duration::from_secs(10), true).await;
        let request = wsman::delete_shell(&self.ep.url, shell, 10.0);
        let _ = self.call(st, request, Duration::from_secs(10), true).await;
        st.shell = None;
    }

    pub(super) async fn upload_locked(
        &self,
        st: &mut State,
        contents: UploadContents<'_>,
        dest: &str,
    ) -> Result<(), TransportError> {
        let want = match contents {
            UploadContents::File(source) => source.sha256_hex(),
        };
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let temp = crate::transport::atomic_upload::temp_beside(
            crate::transport::Os::Windows,
            dest,
            &unique,
        );
        let line = encoded_powershell(&upload_script(dest, &temp, &want));
        let stdin = Stdin::Base64Lines(contents);
        let done = self.run(st, &line, stdin, None, None, true).await?;
        let fail = |why: String| {
            TransportError::Other(format!(
                "host {}: upload to {dest} failed: {why}",
                self.ep.host
            ))
        };
        if done.status != ExitStatus::Code(0) {
            return Err(fail(format!(
                "{:?}: {}",
                done.status,
                String::from_utf8_lossy(&done.stderr).trim()
            )));
        }
        let got = String::from_utf8_lossy(&done.stdout).trim().to_lowercase();
        if got != want {
            return Err(fail(format!(
                "the file on the host has SHA-256 {got:?}, expected {want}"
            )));
        }
        Ok(())
    }

    pub(super) async fn remove_locked(
        &self,
        st: &mut State,
        path: &str,
    ) -> Result<(), TransportError> {
        let line = encoded_powershell(&remove_script(path));
        let done = self.run(st, &line, Stdin::Closed, None, None, true).await?;
        if done.status != ExitStatus::Code(0) {
            return Err(TransportError::Other(format!(
                "host {}: cannot remove {path}: {}",
                self.ep.host,
                String::from_utf8_lossy(&done.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Restarts the host, waits until it went away and came back, and opens
    /// a new connection and shell.
    pub(super) async fn reboot_and_wait(&self, timeout: Duration) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().await;
        let command = self
            .ep
            .reboot_command
            .clone()
            .unwrap_or_else(|| "Restart-Computer -Force".into());
        let line = encoded_powershell(&command);
        let limit = Some(timeout.min(Duration::from_secs(60)));
        // A command killed by the shutdown it started may end with any code
        // (or not at all): what counts is whether the host goes down.
        let said = match self
            .run(&mut st, &line, Stdin::Closed, limit, None, true)
            .await
        {
            Ok(done) if done.status == ExitStatus::Code(0) => String::new(),
            Ok(done) => format!(
                "; the reboot command ended with {:?}: {}",
                done.status,
                String::from_utf8_lossy(&done.stderr).trim()
            ),
            Err(TransportError::ConnectionLost(_)) => String::new(),
            // Refused: the host is going down already (an installer that
            // restarts it itself exits 1641; the runner's question of who
            // is logged on may have been its last answer). The wait below
            // sees it gone, then back, or not within the timeout.
            Err(TransportError::Unreachable(_)) => String::new(),
            Err(e) => return Err(e),
        };
        st.shell = None;
        // Wait for it to go: its WinRM port stops answering. (A closed
        // connection alone proves nothing: it may just have been idle.)
        loop {
            let probe = tokio::net::TcpStream::connect((self.ep.address.as_str(), self.ep.port));
            let answering = matches!(
                tokio::time::timeout(Duration::from_secs(2), probe).await,
                Ok(Ok(_))
            );
            if !answering {
                break;
            }
            if Instant::now() >= deadline {
                return Err(TransportError::Other(format!(
                    "host {}: did not go down within {}s of the reboot command{said}",
                    self.ep.host,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        st.link = None;
        // Wait for it to come back and let us in.
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.shell(&mut st).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    last = e.to_string();
                    st.link = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(self.unreachable(format!(
            "did not come back within {}s of the reboot ({last})",
            timeout.as_secs()
        )))
    }
}
