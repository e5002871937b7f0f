//! How a script reaches a shell without being on any command line.
//!
//! Every process's arguments are readable by every user of the machine
//! (`/proc/PID/cmdline`, `ps`), so a rendered script, which may hold a
//! secret, must never be one. Instead the shell is started with a fixed
//! *reader* program, the same for every step and free of secrets, and the
//! script follows on standard input as a [`payload`]: a header line with the
//! script's line count, the script's lines, then whatever the command's own
//! standard input is. The reader takes exactly those lines (the shell's
//! `read` takes a pipe one byte at a time, so nothing after them is
//! consumed), then evaluates the script with the rest of standard input
//! still there for it: a step that reads stdin reads its own data, or end of
//! file, never the script's tail.
//!
//! PowerShell gets the same payload, read by a fixed bootstrap sent as
//! `-EncodedCommand` (base64 of the bootstrap, never of the script). Not
//! `-Command -`: PowerShell runs stdin given that way statement by statement
//! as if typed at a prompt, so a multi-line `if` or function needs a blank
//! line after it or silently never runs, and `$ErrorActionPreference` and
//! the exit code behave differently (PowerShell/PowerShell#3223, #15331,
//! #21808; Ansible's SSH connection to Windows bootstraps the same way). The
//! bootstrap reads stdin as UTF-8 bytes, not through the console's code
//! page, so non-ASCII text arrives intact, then runs the whole script as one
//! script block. On Windows over SSH a command's own stdin data reaches the
//! script as `$input` (native programs it starts see end of file). Over
//! WinRM the payload goes by WS-Management Send to the command's stdin, as
//! Ansible's WinRM connection sends its bootstrap's input (MS-WSMV 3.1.4.14;
//! pywinrm's `send_command_input`).
//!
//! `cmd` steps: cmd.exe reads no script from stdin the way a shell does, so
//! it is started reading commands as if typed ([`cmd_line`]) with echo off,
//! and the text goes to it line by line ([`cmd_payload`]); a `cmd` step
//! takes no stdin data of its own.

use base64::Engine as _;

/// The script and the command's own stdin as one stream for a reader.
pub fn payload(script: &str, stdin: Option<&[u8]>) -> Vec<u8> {
    let mut body = script.to_string();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let lines = body.matches('\n').count();
    let mut out = format!("{lines}\n{body}").into_bytes();
    if let Some(data) = stdin {
        out.extend_from_slice(data);
    }
    out
}

/// The POSIX reader: an `sh -c` program that reads a [`payload`]'s script
/// and evaluates it. `marker` ends it as a comment, so the process that
/// runs the script can be found by it (see `ssh::exec::kill_marked`) while
/// nothing secret is there to find. `125` is the exit code of a payload cut
/// short (the connection broke before the script was read).
pub fn posix_reader(marker: &str) -> String {
    format!(
        "IFS= read -r orchestrate_lines || exit 125; orchestrate_nl=$(printf \"\\n_\"); \
         orchestrate_nl=${{orchestrate_nl%_}}; orchestrate_script=; \
         while [ \"$orchestrate_lines\" -gt 0 ]; do IFS= read -r orchestrate_line || exit 125; \
         orchestrate_script=\"$orchestrate_script$orchestrate_line$orchestrate_nl\"; \
         orchestrate_lines=$((orchestrate_lines - 1)); done; unset orchestrate_line orchestrate_lines; \
         eval \"$orchestrate_script\" # {}",
        marker_text(marker)
    )
}

/// What an SSH server's login shell runs (`$SHELL -c LINE`): it replaces
/// itself with `/bin/sh` running the reader, whatever the login shell is
/// (the reader holds no single quote, so one pair of them suffices).
pub fn posix_exec_line(marker: &str) -> String {
    format!("exec /bin/sh -c '{}'", posix_reader(marker))
}

/// The PowerShell bootstrap, before encoding. Its first line names it for
/// the WinRM test endpoint, which has no PowerShell and plays its part (to
/// PowerShell it is a comment). A payload cut short (the connection broke
/// while the script was on its way) runs nothing and exits 125, as the
/// POSIX reader does: half a script must never run.
///
/// A header with a marker ([`payload_marked`], Windows over SSH) makes it
/// claim its pid file first (`orchestrate-MARKER.pid` in the login user's
/// temporary folder), created exclusively, holding its PID and
/// start time, so a later connection can find and kill it and its
/// children ([`powershell_kill_marked_and_check`]); a file already there
/// means that connection came first and declared the command dead, so it
/// exits 125 without running anything. The file goes when the script ends.
const POWERSHELL_BOOTSTRAP: &str = "\
#orchestrate-helper: script-on-stdin
$orchestrateIn = New-Object System.IO.StreamReader([Console]::OpenStandardInput(), (New-Object System.Text.UTF8Encoding $false))
$orchestrateHead = $orchestrateIn.ReadLine()
if ($null -eq $orchestrateHead) { exit 125 }
$orchestrateLines, $orchestrateMarker = $orchestrateHead -split ' ', 2
$orchestratePidFile = $null
if ($orchestrateMarker) {
  $orchestratePidFile = Join-Path ([System.IO.Path]::GetTempPath()) \"orchestrate-$orchestrateMarker.pid\"
  try { $orchestrateClaim = [System.IO.File]::Open($orchestratePidFile, 'CreateNew', 'Write') } catch { exit 125 }
  $orchestrateSelf = [System.Diagnostics.Process]::GetCurrentProcess()
  $orchestrateBytes = [System.Text.Encoding]::ASCII.GetBytes(\"$($orchestrateSelf.Id) $($orchestrateSelf.StartTime.ToFileTimeUtc())\")
  $orchestrateClaim.Write($orchestrateBytes, 0, $orchestrateBytes.Length); $orchestrateClaim.Close()
}
$orchestrateText = New-Object System.Text.StringBuilder
for ($orchestrateI = 0; $orchestrateI -lt [int]$orchestrateLines; $orchestrateI++) { $orchestrateLine = $orchestrateIn.ReadLine(); if ($null -eq $orchestrateLine) { exit 125 }; [void]$orchestrateText.Append($orchestrateLine).Append(\"`n\") }
$orchestrateBlock = [scriptblock]::Create($orchestrateText.ToString())
$orchestrateData = $orchestrateIn.ReadToEnd()
Remove-Variable orchestrateText, orchestrateLines, orchestrateLine, orchestrateI, orchestrateHead, orchestrateMarker, orchestrateSelf, orchestrateBytes, orchestrateClaim -ErrorAction SilentlyContinue
try {
  if ($orchestrateData.Length -gt 0) { ($orchestrateData -replace \"\\r?\\n$\", '') -split \"\\r?\\n\" | & $orchestrateBlock } else { & $orchestrateBlock }
} finally { if ($orchestratePidFile) { Remove-Item -LiteralPath $orchestratePidFile -Force -ErrorAction SilentlyContinue } }";

/// [`payload`] with `marker` in its header, for the bootstrap to claim its
/// pid file by (Windows over SSH: see [`POWERSHELL_BOOTSTRAP`]).
pub fn payload_marked(script: &str, stdin: Option<&[u8]>, marker: &str) -> Vec<u8> {
    let plain = payload(script, stdin);
    let at = plain
        .iter()
        .position(|&b| b == b'\n')
        .expect("a header line");
    let mut out = plain[..at].to_vec();
    out.push(b' ');
    out.extend_from_slice(marker_text(marker).as_bytes());
    out.extend_from_slice(&plain[at..]);
    out
}

/// PowerShell that kills what the commands marked `markers` left running
/// on a Windows host, with every process they started, and exits 0 only
/// once none of them is left (about 3 s; then it names them and exits 1).
/// A PowerShell command is found by its pid file (its PID, checked against
/// its start time, since PIDs are reused), a `cmd` command by its marker on
/// cmd.exe's command line (Win32_Process.CommandLine); children by
/// ParentProcessId, which Windows keeps after a parent dies. A marker with
/// no pid file gets one claimed first (the tombstone the bootstrap then
/// finds), so a command that had not started yet never will. Documented
/// behaviour it relies on: `File.Open` with `CreateNew` fails when the file
/// exists; `Stop-Process -Force`; `Win32_Process` ProcessId, ParentProcessId,
/// CommandLine and CreationDate. No PowerShell runs here: only the script's
/// text is tested.
pub fn powershell_kill_marked_and_check(markers: &[String]) -> String {
    let list: Vec<String> = markers
        .iter()
        .map(|m| format!("'{}'", marker_text(m)))
        .collect();
    format!(
        r#"$ErrorActionPreference = 'SilentlyContinue'
$markers = @({list})
$roots = @()
foreach ($marker in $markers) {{
  $file = Join-Path ([System.IO.Path]::GetTempPath()) "orchestrate-$marker.pid"
  try {{
    $claim = [System.IO.File]::Open($file, 'CreateNew', 'Write')
    $bytes = [System.Text.Encoding]::ASCII.GetBytes('dead')
    $claim.Write($bytes, 0, $bytes.Length); $claim.Close()
  }} catch {{
    $id, $start = ((Get-Content -LiteralPath $file -Raw) -as [string]).Trim() -split ' ', 2
    $p = Get-Process -Id ([int]$id)
    if ($p -and $p.StartTime.ToFileTimeUtc() -eq [long]$start) {{ $roots += $p.Id }}
  }}
  $roots += @(Get-CimInstance Win32_Process | Where-Object {{ $_.CommandLine -like "*$marker*" -and $_.ProcessId -ne $PID }} | ForEach-Object {{ [int]$_.ProcessId }})
}}
$all = @(Get-CimInstance Win32_Process)
$doomed = New-Object System.Collections.Generic.List[int]
$queue = New-Object System.Collections.Generic.Queue[object]
foreach ($id in $roots) {{ $p = $all | Where-Object ProcessId -eq $id; if ($p) {{ $queue.Enqueue($p) }} }}
while ($queue.Count -gt 0) {{
  $p = $queue.Dequeue()
  if ($doomed.Contains([int]$p.ProcessId)) {{ continue }}
  $doomed.Add([int]$p.ProcessId)
  $all | Where-Object {{ $_.ParentProcessId -eq $p.ProcessId -and $_.CreationDate -ge $p.CreationDate }} | ForEach-Object {{ $queue.Enqueue($_) }}
}}
for ($i = 0; $i -lt 30; $i++) {{
  $left = @($doomed | Where-Object {{ Get-Process -Id $_ }})
  if ($left.Count -eq 0) {{ exit 0 }}
  foreach ($id in $left) {{ Stop-Process -Id $id -Force }}
  Start-Sleep -Milliseconds 100
}}
[Console]::Error.WriteLine("still running after Stop-Process -Force: pids $($left -join ' ')")
exit 1
"#,
        list = list.join(", ")
    )
}

/// `PROGRAM -NoProfile -NonInteractive -EncodedCommand <bootstrap>`: the
/// whole command line of a PowerShell step, the same for every step.
pub fn powershell_line(program: &str) -> String {
    format!(
        "{program} -NoProfile -NonInteractive -EncodedCommand {}",
        powershell_bootstrap_encoded()
    )
}

/// The bootstrap as `-EncodedCommand` takes it (base64 of UTF-16LE),
/// encoded once: every PowerShell step's line carries it.
pub fn powershell_bootstrap_encoded() -> &'static str {
    static ENCODED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let utf16: Vec<u8> = POWERSHELL_BOOTSTRAP
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        base64::engine::general_purpose::STANDARD.encode(utf16)
    });
    &ENCODED
}

/// cmd.exe reading its commands from standard input: `/k` keeps it
/// reading after the fixed `rem` (and, unlike a bare `cmd`, prints no
/// version banner), `/q` turns echo off, so neither prompts nor commands
/// are echoed (Microsoft's `cmd` and `echo` references), `/d` skips the
/// AutoRun commands. Each line is read and run as a line typed at the
/// prompt is, with the same rules as `cmd /c LINE` (`%VAR%` expanded once,
/// `for %i`), never as a batch file (`%%`). `marker` ends the line as the
/// `rem`'s text, so the process can be found by it.
pub fn cmd_line(marker: &str) -> String {
    format!("cmd /d /q /k rem {}", marker_text(marker))
}

/// The commands for [`cmd_line`]: the text, CRLF line ends, then an `exit`
/// with the last command's code (read after the text ran, so `%ERRORLEVEL%`
/// is its code), since interactive cmd.exe ends at end of input with none.
/// The blank line ends a trailing `^` continuation before the `exit`.
pub fn cmd_payload(text: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\nexit %ERRORLEVEL%\r\n");
    out.into_bytes()
}

/// The arguments of [`powershell_line`] after the program, for a local spawn.
pub fn powershell_args() -> Vec<String> {
    powershell_line("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A marker reduced to characters that need no quoting anywhere.
fn marker_text(marker: &str) -> String {
    marker
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_reader(script: &str, stdin: Option<&[u8]>) -> (String, i32) {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &posix_reader("orchestrate-test-1")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&payload(script, stdin))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    #[test]
    fn the_reader_runs_the_script_and_leaves_stdin_to_it() {
        let script = "  x='a  b\\c'\nprintf '%s|' \"$x\"\ncat <<EOF\nhere $x\nEOF\nexit 3";
        let (out, code) = run_reader(script, None);
        assert_eq!(out, "a  b\\c|here a  b\\c\n");
        assert_eq!(code, 3);
        let (out, code) = run_reader("tr a-z A-Z", Some(b"own data\n"));
        assert_eq!((out.as_str(), code), ("OWN DATA\n", 0));
        // A step that reads stdin without data gets end of file, not the script.
        let (out, _) = run_reader("cat\necho after", None);
        assert_eq!(out, "after\n");
        let (out, code) = run_reader("", None);
        assert_eq!((out.as_str(), code), ("", 0));
    }

    #[test]
    fn nothing_of_the_script_is_on_the_command_line() {
        let line = posix_exec_line("orchestrate-9-9");
        assert!(line.starts_with("exec /bin/sh -c '") && line.ends_with("# orchestrate-9-9'"));
        assert_eq!(line.matches('\'').count(), 2, "{line}");
        // The same PowerShell line for every script: only the bootstrap.
        assert_eq!(powershell_line("powershell"), powershell_line("powershell"));
        assert!(
            powershell_line("pwsh").starts_with("pwsh -NoProfile -NonInteractive -EncodedCommand ")
        );
        assert_eq!(powershell_args()[0], "-NoProfile");
        assert_eq!(payload("a\nb", Some(b"z")), b"2\na\nb\nz".to_vec());
        assert_eq!(
            payload_marked("a\nb", Some(b"z"), "orchestrate-1-2-end"),
            b"2 orchestrate-1-2-end\na\nb\nz".to_vec()
        );
    }

    #[test]
    fn the_windows_killer_claims_each_marker_and_kills_trees() {
        let markers = vec![
            "orchestrate-7-1-end".to_string(),
            "orchestrate-7-2-end".to_string(),
        ];
        let script = powershell_kill_marked_and_check(&markers);
        assert!(script.contains("$markers = @('orchestrate-7-1-end', 'orchestrate-7-2-end')"));
        // The same pid file as the bootstrap claims, claimed the same way.
        let folder = "Join-Path ([System.IO.Path]::GetTempPath())";
        assert!(script.contains(&format!("{folder} \"orchestrate-$marker.pid\"")));
        assert!(
            POWERSHELL_BOOTSTRAP
                .contains(&format!("{folder} \"orchestrate-$orchestrateMarker.pid\""))
        );
        assert_eq!(script.matches("'CreateNew'").count(), 1);
        assert_eq!(POWERSHELL_BOOTSTRAP.matches("'CreateNew'").count(), 1);
        for needle in [
            "ParentProcessId",
            "Stop-Process -Id $id -Force",
            "StartTime.ToFileTimeUtc()",
            "exit 1",
        ] {
            assert!(script.contains(needle), "{needle}");
        }
        // Only marker characters reach the script: no quote can end its list.
        let odd = powershell_kill_marked_and_check(&["x'; rm -r /".to_string()]);
        assert!(odd.contains("@('xrm-r')"), "{odd}");
    }
}
