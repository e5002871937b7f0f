//! PowerShell's CLIXML error stream, turned back into text a person can read.
//!
//! `powershell.exe` started without a console (as WinRM starts it) does not
//! print errors: it serialises its error records to stderr as
//! `#< CLIXML` followed by an `<Objs>` document, one `<S S="Error">` string per
//! line, with control characters escaped as `_xHHHH_`. Shown as is, that is
//! unreadable, so the session converts it; anything else is left alone.

use quick_xml::Reader;
use quick_xml::events::Event;

const MARKER: &[u8] = b"#< CLIXML";

/// If `stderr` is a CLIXML document, the text of its error strings (and
/// warnings, verbose and debug lines); otherwise `None`.
pub fn decode(stderr: &[u8]) -> Option<Vec<u8>> {
    let start = stderr.windows(MARKER.len()).position(|w| w == MARKER)?;
    let (before, rest) = stderr.split_at(start);
    let xml = &rest[MARKER.len()..];
    let mut reader = Reader::from_reader(xml);
    let mut out = String::from_utf8_lossy(before).into_owned();
    let mut in_string = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.local_name().as_ref() == "S" => {
                in_string = e.attributes().flatten().any(|a| {
                    a.key.as_ref() == "S"
                        && matches!(
                            a.value.as_ref(),
                            "Error" | "error" | "Warning" | "warning" | "verbose" | "debug"
                        )
                });
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == "S" => in_string = false,
            Ok(Event::Text(t)) if in_string => out.push_str(&unescape_clixml(&t)),
            Ok(Event::GeneralRef(r)) if in_string => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else {
                    out.push_str(match r.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    Some(out.replace("\r\n", "\n").into_bytes())
}

/// `_x000D__x000A_` → CR LF; `_x005F_` → `_` (an escaped underscore).
fn unescape_clixml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("_x") {
        out.push_str(&rest[..i]);
        let candidate = &rest[i..];
        let decoded = candidate
            .get(2..6)
            .filter(|_| candidate.as_bytes().get(6) == Some(&b'_'))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .and_then(char::from_u32);
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &candidate[7..];
            }
            None => {
                out.push_str("_x");
                rest = &candidate[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_error_strings() {
        let raw = b"#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T></TN></Obj><S S=\"Error\">Write-Error &quot;Error&quot; : bad_x000D__x000A_</S><S S=\"Error\">    + x_x005F_y_x000D__x000A_</S></Objs>";
        let text = String::from_utf8(decode(raw).unwrap()).unwrap();
        assert_eq!(text, "Write-Error \"Error\" : bad\n    + x_y\n");
    }

    #[test]
    fn leaves_plain_text_alone() {
        assert!(decode(b"plain error\n").is_none());
    }
}
