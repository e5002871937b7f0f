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
//!
//! Some scripts are the transport's own and are answered from what the
//! host knows rather than from the scenario: the kill helpers
//! ([`is_housekeeping`]), the check and rename of an upload's copy
//! ([`upload_check`], read back from the script's shape), the move into
//! place of a `become` upload ([`become_move`]) and the run of a
//! `script:` step's copy ([`copied_script`], which must have been
//! uploaded).

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
    // The transport's bootstrap (every PowerShell step's line) is known:
    // found as it is, not decoded again for every command of every host.
    if trimmed.contains(crate::transport::wrapper::powershell_bootstrap_encoded()) {
        return Line::Reader;
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

/// The transport's check of an upload's copy before it is renamed over
/// its destination (`atomic_upload::sh_check_and_replace` and
/// `powershell_check_and_replace`): what it names and expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCheck {
    pub temp: String,
    pub dest: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// The check in `script`, if it is one: recognised by its shape (the
/// `tmp=...; dest=...` or `$tmp = ...; $dest = ...` line, the size and
/// SHA-256 it compares with, the rename that ends it), its paths unquoted
/// as `crate::quote` quoted them.
pub fn upload_check(script: &str) -> Option<UploadCheck> {
    CHECK_SHAPES.iter().find_map(|shape| shape.read(script))
}

/// How one shell writes the transport's check of an upload.
struct CheckShape {
    /// The line naming the paths starts with this, then the temporary
    /// path, `then`, and the destination.
    opens: &'static str,
    then: &'static str,
    /// Reads one quoted path, and gives what follows it.
    word: fn(&str) -> Option<(String, &str)>,
    /// The expected size and SHA-256 follow these.
    size: &'static str,
    sha256: &'static str,
    /// The rename the script ends with.
    renames: &'static str,
}

const CHECK_SHAPES: [CheckShape; 2] = [
    CheckShape {
        opens: "tmp=",
        then: "; dest=",
        word: sh_word,
        size: "[ \"$size\" != ",
        sha256: "[ \"$sum\" != ",
        renames: "mv -f \"$tmp\" \"$dest\"",
    },
    CheckShape {
        opens: "$tmp = ",
        then: "; $dest = ",
        word: ps_word,
        size: "if ($size -ne ",
        sha256: "$sum -ne '",
        renames: "Move-Item -LiteralPath $tmp -Destination $dest -Force",
    },
];

impl CheckShape {
    fn read(&self, script: &str) -> Option<UploadCheck> {
        let line = script.lines().find(|l| l.starts_with(self.opens))?;
        if !script.contains(self.renames) {
            return None;
        }
        let (temp, rest) = (self.word)(&line[self.opens.len()..])?;
        let (dest, _) = (self.word)(rest.strip_prefix(self.then)?)?;
        let size = after(script, self.size)?;
        let sha256 = after(script, self.sha256)?;
        checked(temp, dest, size, sha256)
    }
}

fn checked(temp: String, dest: String, size: &str, sha256: &str) -> Option<UploadCheck> {
    let sha256 = sha256.to_ascii_lowercase();
    (sha256.len() == 64 && sha256.chars().all(|c| c.is_ascii_hexdigit())).then_some(())?;
    Some(UploadCheck {
        temp,
        dest,
        size: size.parse().ok()?,
        sha256,
    })
}

/// The word (digits or hex) right after `marker` in `text`.
fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A POSIX shell word as `sh_quote` writes it (`'...'` pieces and `\'`),
/// and what follows it.
fn sh_word(text: &str) -> Option<(String, &str)> {
    let mut word = String::new();
    let mut rest = text;
    loop {
        if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'')?;
            word.push_str(&quoted[..end]);
            rest = &quoted[end + 1..];
        } else if let Some(tail) = rest.strip_prefix("\\'") {
            word.push('\'');
            rest = tail;
        } else {
            break;
        }
    }
    (rest.len() < text.len()).then_some((word, rest))
}

/// A PowerShell single-quoted string as `ps_quote` writes it (each quote
/// character doubled inside), and what follows it.
fn ps_word(text: &str) -> Option<(String, &str)> {
    let quote = |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
    let mut chars = text.char_indices().peekable();
    if !chars.next().is_some_and(|(_, c)| quote(c)) {
        return None;
    }
    let mut word = String::new();
    while let Some((at, c)) = chars.next() {
        if !quote(c) {
            word.push(c);
            continue;
        }
        match chars.peek() {
            Some(&(_, next)) if quote(next) => {
                word.push(c);
                chars.next();
            }
            _ => return Some((word, &text[at + c.len_utf8()..])),
        }
    }
    None
}

/// The move into place of a `become` upload (`run::host::perform`'s
/// `move_into_place`: `umask 077 && cp STAGED DEST.orchestrate-new &&
/// chmod ... && mv -f ... DEST && rm -f STAGED || ...`): the staged copy
/// and the destination.
pub fn become_move(script: &str) -> Option<(String, String)> {
    let rest = script.trim_start().strip_prefix("umask 077 && cp ")?;
    let (staged, rest) = sh_word(rest)?;
    let (next, rest) = sh_word(rest.strip_prefix(' ')?)?;
    let rest = &rest[rest.find(" && mv -f ")? + " && mv -f ".len()..];
    let (_, rest) = sh_word(rest)?;
    let (dest, rest) = sh_word(rest.strip_prefix(' ')?)?;
    (rest.starts_with(" && rm -f ") && next == format!("{dest}.orchestrate-new"))
        .then_some((staged, dest))
}

/// The path of the transport's copy of a `script:` step that `script`
/// runs (`'/tmp/orchestrate-UNIQUE-NAME' ARGS`, `& 'C:\Windows\Temp\
/// orchestrate-UNIQUE-NAME' ARGS`, or `"C:\...\NAME.cmd" ARGS`): only
/// paths of the transport's temporary shape, which nothing but an upload
/// of this run can have made.
pub fn copied_script(script: &str) -> Option<String> {
    let line = script.trim_start();
    let path = if line.starts_with('\'') {
        sh_word(line)?.0
    } else if let Some(rest) = line.strip_prefix("& ") {
        ps_word(rest)?.0
    } else if let Some(rest) = line.strip_prefix('"') {
        rest[..rest.find('"')?].to_string()
    } else {
        return None;
    };
    use crate::transport::{Os, temp_prefix};
    let temporary = path.starts_with(temp_prefix(Os::Linux))
        || path
            .to_ascii_lowercase()
            .starts_with(&temp_prefix(Os::Windows).to_ascii_lowercase());
    temporary.then_some(path)
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

    #[test]
    fn the_transports_upload_checks_are_read_back_whatever_their_paths_hold() {
        use crate::transport::atomic_upload::{
            Expected, powershell_check_and_replace, sh_check_and_replace,
        };
        let expected = Expected::of(b"contents");
        let want = |temp: &str, dest: &str| UploadCheck {
            temp: temp.into(),
            dest: dest.into(),
            size: 8,
            sha256: expected.sha256.clone(),
        };
        let (temp, dest) = ("/opt/it's here/.a b.tmp", "/opt/it's here/a b");
        assert_eq!(
            upload_check(&sh_check_and_replace(temp, dest, &expected)),
            Some(want(temp, dest))
        );
        let (temp, dest) = (
            "C:\\Program Files\\O’Brien\\.x.tmp",
            "C:\\Program Files\\O’Brien\\x",
        );
        assert_eq!(
            upload_check(&powershell_check_and_replace(temp, dest, &expected)),
            Some(want(temp, dest))
        );
        assert_eq!(upload_check("tmp=1; dest=2\necho hi"), None);
    }

    #[test]
    fn a_run_of_a_copied_script_names_its_copy() {
        assert_eq!(
            copied_script("'/tmp/orchestrate-ab12-setup.sh' 'x'").as_deref(),
            Some("/tmp/orchestrate-ab12-setup.sh")
        );
        assert_eq!(
            copied_script("& 'C:\\Windows\\Temp\\orchestrate-ab12-s.ps1' 'x'").as_deref(),
            Some("C:\\Windows\\Temp\\orchestrate-ab12-s.ps1")
        );
        assert_eq!(
            copied_script("\"C:\\Windows\\Temp\\orchestrate-ab12-s.cmd\" x").as_deref(),
            Some("C:\\Windows\\Temp\\orchestrate-ab12-s.cmd")
        );
        assert_eq!(copied_script("'/opt/tool' run"), None);
        let moved = "umask 077 && cp '/tmp/orchestrate-1-upload' '/etc/it'\\''s.orchestrate-new' \
            && chmod 0600 '/etc/it'\\''s.orchestrate-new' && mv -f '/etc/it'\\''s.orchestrate-new' \
            '/etc/it'\\''s' && rm -f '/tmp/orchestrate-1-upload' || { rm -f x; exit 1; }";
        assert_eq!(
            become_move(moved),
            Some(("/tmp/orchestrate-1-upload".into(), "/etc/it's".into()))
        );
        assert_eq!(copied_script("echo hi"), None);
    }
}
