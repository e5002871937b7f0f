//! Turning a step's output into a value later templates can read
//! (`capture: { as: NAME, parse: json | lines | text | ini }`).
//!
//! `ini` exists for the settings old products export: KESL's
//! `kesl-control --get-settings` writes sections such as
//! `[ExcludedFromScanScope.item_0000]` with `Path=/opt/app/data`. Sections
//! become maps of their keys; keys before any section sit at the top.

use serde_json::{Map, Value};

use crate::load::CaptureFormat;
use crate::transport::BoundedOutput;
use crate::transport::output::CAPTURE_LIMIT;

/// Parses a step's stdout for its capture. Output the transport did not
/// keep whole is refused: parsing its head alone would capture a value
/// that is not what the host said (JSON cut mid-way, INI sections lost).
pub fn parse_output(format: CaptureFormat, stdout: &BoundedOutput) -> Result<Value, String> {
    match stdout.complete() {
        Some(bytes) => parse(format, &String::from_utf8_lossy(bytes)),
        None => Err(format!(
            "the output is {} bytes, more than the {} KiB a capture can read; make the \
             command print only what the capture needs",
            stdout.total_len(),
            CAPTURE_LIMIT / 1024
        )),
    }
}

pub fn parse(format: CaptureFormat, output: &str) -> Result<Value, String> {
    match format {
        CaptureFormat::Text => Ok(Value::String(
            output.trim_end_matches(['\n', '\r']).to_string(),
        )),
        CaptureFormat::Lines => Ok(Value::Array(
            output
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(|l| Value::String(l.to_string()))
                .collect(),
        )),
        CaptureFormat::Json => {
            let text = output.trim_start_matches('\u{feff}').trim();
            if text.is_empty() {
                return Err("the output is empty; expected JSON".into());
            }
            serde_json::from_str(text).map_err(|e| {
                let preview: String = text.chars().take(80).collect();
                format!("the output is not JSON ({e}): {preview}")
            })
        }
        CaptureFormat::Ini => Ok(parse_ini(output)),
    }
}

fn parse_ini(text: &str) -> Value {
    let mut top = Map::new();
    let mut section: Option<(String, Map<String, Value>)> = None;
    for raw in text.lines() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if let Some((name, keys)) = section.take() {
                top.insert(name, Value::Object(keys));
            }
            let name = name.trim().to_string();
            // A section named twice continues where it left off.
            let keys = match top.remove(&name) {
                Some(Value::Object(keys)) => keys,
                _ => Map::new(),
            };
            section = Some((name, keys));
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        let value = Value::String(unquote(value).to_string());
        match &mut section {
            Some((_, keys)) => keys.insert(key.to_string(), value),
            None => top.insert(key.to_string(), value),
        };
    }
    if let Some((name, keys)) = section {
        top.insert(name, Value::Object(keys));
    }
    Value::Object(top)
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The exclusion format DOMAIN.md documents for KESL settings exports.
    const KESL_EXPORT: &str = "\
; kesl-control --get-settings 1 --file scan.ini
ScanArchived=No
[ExcludedFromScanScope.item_0000]
AreaDesc=
UseScanArea=Yes
Path=/opt/app/data
AreaMask.item_0000=*

[ExcludedFromScanScope.item_0001]
AreaDesc=Build cache
UseScanArea=Yes
Path=/srv/build cache/tmp
AreaMask.item_0000=*.o
AreaMask.item_0001=*.tmp
";

    #[test]
    fn kesl_exclusions_with_several_items_empty_values_and_masks() {
        let value = parse(CaptureFormat::Ini, KESL_EXPORT).unwrap();
        assert_eq!(value["ScanArchived"], "No");
        let first = &value["ExcludedFromScanScope.item_0000"];
        assert_eq!(first["Path"], "/opt/app/data");
        assert_eq!(first["AreaDesc"], "", "an empty value is kept, empty");
        assert_eq!(first["AreaMask.item_0000"], "*");
        let second = &value["ExcludedFromScanScope.item_0001"];
        assert_eq!(second["Path"], "/srv/build cache/tmp");
        assert_eq!(second["AreaDesc"], "Build cache");
        assert_eq!(second["AreaMask.item_0000"], "*.o");
        assert_eq!(second["AreaMask.item_0001"], "*.tmp");
        let sections: Vec<&String> = value
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("Excluded"))
            .collect();
        assert_eq!(sections.len(), 2);
    }

    #[test]
    fn ini_comments_quotes_and_crlf() {
        let value = parse(
            CaptureFormat::Ini,
            "# c\r\n[a]\r\nx = \"quoted value\"\r\nflag\r\n",
        )
        .unwrap();
        assert_eq!(value, json!({"a": {"x": "quoted value", "flag": ""}}));
    }

    #[test]
    fn output_not_kept_whole_is_not_parsed() {
        let mut buffer = crate::transport::OutputBuffer::default();
        buffer.push(b"{\"a\": \"");
        buffer.push(&vec![b'x'; CAPTURE_LIMIT]);
        buffer.push(b"\"}");
        let err = parse_output(CaptureFormat::Json, &buffer.finish()).unwrap_err();
        let want = format!(
            "the output is {} bytes, more than the 1024 KiB",
            CAPTURE_LIMIT + 9
        );
        assert!(err.starts_with(&want), "{}", &err[..err.len().min(200)]);
        let whole = BoundedOutput::whole(b"{\"a\": 1}".to_vec());
        assert_eq!(
            parse_output(CaptureFormat::Json, &whole).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn json_lines_and_text() {
        assert_eq!(
            parse(CaptureFormat::Json, "\u{feff}[{\"a\":1}]\r\n").unwrap(),
            json!([{"a": 1}])
        );
        assert!(
            parse(CaptureFormat::Json, "")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse(CaptureFormat::Json, "not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert_eq!(
            parse(CaptureFormat::Lines, "a\n\nb \n").unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            parse(CaptureFormat::Text, "hello\n").unwrap(),
            json!("hello")
        );
    }
}
