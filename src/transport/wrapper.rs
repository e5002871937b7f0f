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
//! script as `$input` (native programs it starts see end of file).

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

/// The PowerShell bootstrap, before encoding.
const POWERSHELL_BOOTSTRAP: &str = "\
$orchestrateIn = New-Object System.IO.StreamReader([Console]::OpenStandardInput(), (New-Object System.Text.UTF8Encoding $false))
$orchestrateLines = [int]$orchestrateIn.ReadLine()
$orchestrateText = New-Object System.Text.StringBuilder
for ($orchestrateI = 0; $orchestrateI -lt $orchestrateLines; $orchestrateI++) { [void]$orchestrateText.Append($orchestrateIn.ReadLine()).Append(\"`n\") }
$orchestrateBlock = [scriptblock]::Create($orchestrateText.ToString())
$orchestrateData = $orchestrateIn.ReadToEnd()
Remove-Variable orchestrateText, orchestrateLines, orchestrateI
if ($orchestrateData.Length -gt 0) { ($orchestrateData -replace \"\\r?\\n$\", '') -split \"\\r?\\n\" | & $orchestrateBlock } else { & $orchestrateBlock }";

/// `PROGRAM -NoProfile -NonInteractive -EncodedCommand <bootstrap>`: the
/// whole command line of a PowerShell step, the same for every step.
pub fn powershell_line(program: &str) -> String {
    let utf16: Vec<u8> = POWERSHELL_BOOTSTRAP
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    format!(
        "{program} -NoProfile -NonInteractive -EncodedCommand {}",
        base64::engine::general_purpose::STANDARD.encode(utf16)
    )
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
    }
}
