//! What a simulated endpoint makes of an SSH `exec` request: the script the
//! controller meant, recovered from the wire form the SSH transport sends.
//!
//! The transport never puts a script on the command line (see
//! `transport::wrapper`): the line is a fixed reader (POSIX `sh`, the same
//! reader under `sudo` for `become`, or PowerShell's `-EncodedCommand`
//! bootstrap) and the script follows on standard input as a payload (a line
//! count, the lines, then the command's own input). A simulated endpoint
//! takes the script back out of that payload, so a scenario matches the
//! text the playbook rendered, exactly as a real host would run it. Lines
//! that are not readers (`cmd /c ...`, the reboot command, the
//! transport's own helpers) are the script themselves.

use base64::Engine as _;

/// The kind of exec line received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A reader: the script comes on standard input.
    Reader,
    /// A `become` reader under sudo: it must print `marker` on standard
    /// error first (a NOPASSWD rule), then the script comes on stdin.
    Become { marker: String },
    /// cmd.exe reading commands from stdin (`cmd /d /q /k rem MARKER`):
    /// the text, then `exit %ERRORLEVEL%`.
    Cmd,
    /// The line is the script (with `cmd /c ` taken off).
    Direct(String),
}

/// Classifies an exec line.
pub fn classify(line: &str) -> Line {
    let trimmed = line.trim();
    if trimmed.starts_with("exec sudo ") {
        // `... /bin/sh -c 'printf "%s\n" MARKER >&2; READER'`
        let marker = trimmed
            .split("printf \"%s\\n\" ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        return Line::Become { marker };
    }
    if trimmed.starts_with("exec /bin/sh -c 'IFS= read -r orchestrate_lines") {
        return Line::Reader;
    }
    if trimmed.starts_with("cmd /d /q /k rem ") {
        return Line::Cmd;
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    // PowerShell, alone (Windows) or under a waiting `sh -c` (pwsh elsewhere).
    let program = words.iter().position(|w| {
        let w = w.trim_start_matches('\'').to_ascii_lowercase();
        ["powershell", "pwsh", "powershell.exe", "pwsh.exe"].contains(&w.as_str())
    });
    if program.is_some()
        && let Some(at) = words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("-EncodedCommand"))
        && let Some(encoded) = words.get(at + 1)
    {
        let encoded = encoded.trim_end_matches(';');
        let text = decode_utf16_base64(encoded).unwrap_or_default();
        // The bootstrap reads the script from stdin; any other encoded
        // text (the transport's fixed helpers) is the script itself.
        if text.contains("$orchestrateIn") {
            return Line::Reader;
        }
        return Line::Direct(text);
    }
    if let Some(rest) = trimmed
        .strip_prefix("cmd /c ")
        .or_else(|| trimmed.strip_prefix("cmd.exe /c "))
    {
        return Line::Direct(rest.to_string());
    }
    Line::Direct(trimmed.to_string())
}

fn decode_utf16_base64(text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// The script in a payload (`N\n` then N lines; what follows is the
/// command's own input). A payload cut short gives what arrived.
pub fn script_of(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let Some((count, rest)) = text.split_once('\n') else {
        return String::new();
    };
    // The header may carry a marker after the count (`N MARKER`).
    let lines: usize = count
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    rest.split_inclusive('\n').take(lines).collect()
}

/// The text a [`Line::Cmd`] reader was sent, without the `exit` that ends it.
pub fn cmd_script_of(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    text.trim_end()
        .trim_end_matches("exit %ERRORLEVEL%")
        .trim_end()
        .replace("\r\n", "\n")
}

/// A script that is the transport's housekeeping, not a playbook step:
/// finding and killing what a lost connection left running. Nothing runs
/// on a simulated host, so there is never anything left to kill.
pub fn is_housekeeping(script: &str) -> bool {
    script.contains("o[r]chestrate-") || script.contains("\"orchestrate-$marker.pid\"")
}

/// A script that restarts the host (the transport's reboot command, or a
/// step that does it itself).
pub fn is_reboot(script: &str) -> bool {
    let s = script.trim_start().to_ascii_lowercase();
    s.starts_with("shutdown -r")
        || s.starts_with("shutdown /r")
        || s.starts_with("shutdown.exe /r")
        || s.starts_with("restart-computer")
        || s.starts_with("reboot")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::wrapper;

    #[test]
    fn every_reader_of_the_transport_is_recognised_and_its_script_recovered() {
        assert_eq!(classify(&wrapper::posix_exec_line("m-1-end")), Line::Reader);
        assert_eq!(
            classify(&wrapper::powershell_line("powershell")),
            Line::Reader
        );
        let sudo = format!(
            "exec sudo -S -p '[p]' -u 'root' -- /bin/sh -c 'printf \"%s\\n\" orchestrate-became-42 >&2; {}'",
            wrapper::posix_reader("m")
        );
        assert_eq!(
            classify(&sudo),
            Line::Become {
                marker: "orchestrate-became-42".into()
            }
        );
        assert_eq!(classify("cmd /c dir C:\\"), Line::Direct("dir C:\\".into()));
        let helper = crate::transport::encoded_powershell("powershell", "Get-Date");
        assert_eq!(classify(&helper), Line::Direct("Get-Date".into()));
        let payload = wrapper::payload("a\nb", Some(b"own input"));
        assert_eq!(script_of(&payload), "a\nb\n");
        let marked = wrapper::payload_marked("a\nb", None, "orchestrate-1-2-end");
        assert_eq!(script_of(&marked), "a\nb\n");
        assert_eq!(classify(&wrapper::cmd_line("m-1")), Line::Cmd);
        assert_eq!(cmd_script_of(&wrapper::cmd_payload("dir\nver")), "dir\nver");
        let pwsh = format!(
            "exec /bin/sh -c '{}; exit $? # m'",
            wrapper::powershell_line("pwsh")
        );
        assert_eq!(classify(&pwsh), Line::Reader);
        assert!(is_housekeeping(&wrapper::powershell_kill_marked_and_check(
            &["m".into()]
        )));
        assert!(is_reboot("shutdown /r /t 0") && is_reboot("shutdown -r now"));
        assert!(is_housekeeping("pids=$(pgrep -f 'o[r]chestrate-1-2-end')"));
    }
}
