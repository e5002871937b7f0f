//! WS-Management (MS-WSMV) SOAP envelopes for the remote shell, and the
//! parsing of what the service answers.
//!
//! Requests are built from fixed templates, shaped like those of pywinrm and
//! of Windows' own `winrs`, because the service is picky about headers
//! (`mustUnderstand`, the resource URI, the ShellId selector) and little else
//! varies. Every value put in a template is XML-escaped. Answers are read with
//! quick-xml by local name, so the prefixes a service chooses do not matter.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;

pub const SHELL_URI: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
const SHELL_NS: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// The fault code of a Receive that found nothing to return in time: poll again.
pub const FAULT_OPERATION_TIMEOUT: u64 = 2150858793;
/// The fault code of a request naming a shell (or command) the service does not know.
pub const FAULT_SHELL_NOT_FOUND: u64 = 2150858843;

/// One request: the envelope and the MessageID it carries.
pub struct Request {
    pub message_id: String,
    pub body: String,
}

fn envelope(
    to: &str,
    action: &str,
    shell_id: Option<&str>,
    options: &[(&str, &str)],
    timeout_secs: f64,
    body: &str,
) -> Request {
    let message_id = format!("uuid:{}", uuid::Uuid::new_v4().to_string().to_uppercase());
    let selector = shell_id
        .map(|id| {
            format!(
                "<w:SelectorSet><w:Selector Name=\"ShellId\">{}</w:Selector></w:SelectorSet>",
                escape(id)
            )
        })
        .unwrap_or_default();
    let options = if options.is_empty() {
        String::new()
    } else {
        let items: String = options
            .iter()
            .map(|(k, v)| format!("<w:Option Name=\"{k}\">{v}</w:Option>"))
            .collect();
        format!("<w:OptionSet>{items}</w:OptionSet>")
    };
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" xmlns:rsp="{SHELL_NS}"><s:Header><a:To>{to}</a:To><a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:MaxEnvelopeSize s:mustUnderstand="true">153600</w:MaxEnvelopeSize><a:MessageID>{message_id}</a:MessageID><w:Locale xml:lang="en-US" s:mustUnderstand="false"/><p:DataLocale xml:lang="en-US" s:mustUnderstand="false"/><w:OperationTimeout>PT{timeout_secs:.3}S</w:OperationTimeout><w:ResourceURI s:mustUnderstand="true">{SHELL_URI}</w:ResourceURI><a:Action s:mustUnderstand="true">{action}</a:Action>{selector}{options}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        to = escape(to),
    );
    Request { message_id, body }
}

/// Create a cmd shell with UTF-8 (65001) as its code page.
pub fn create_shell(to: &str, timeout_secs: f64) -> Request {
    envelope(
        to,
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
        None,
        &[("WINRS_NOPROFILE", "FALSE"), ("WINRS_CODEPAGE", "65001")],
        timeout_secs,
        "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>",
    )
}

/// Start `command` (a whole command line) in the shell. With
/// `console_stdin` false, stdin is a pipe, which is what `$input` and most
/// programs reading stdin need.
pub fn command(
    to: &str,
    shell_id: &str,
    command: &str,
    console_stdin: bool,
    timeout_secs: f64,
) -> Request {
    envelope(
        to,
        &format!("{SHELL_NS}/Command"),
        Some(shell_id),
        &[
            (
                "WINRS_CONSOLEMODE_STDIN",
                if console_stdin { "TRUE" } else { "FALSE" },
            ),
            ("WINRS_SKIP_CMD_SHELL", "FALSE"),
        ],
        timeout_secs,
        &format!(
            "<rsp:CommandLine><rsp:Command>{}</rsp:Command></rsp:CommandLine>",
            escape(command)
        ),
    )
}

/// Send a piece of stdin; `end` closes it.
pub fn send(
    to: &str,
    shell_id: &str,
    command_id: &str,
    data: &[u8],
    end: bool,
    timeout_secs: f64,
) -> Request {
    envelope(
        to,
        &format!("{SHELL_NS}/Send"),
        Some(shell_id),
        &[],
        timeout_secs,
        &format!(
            "<rsp:Send><rsp:Stream Name=\"stdin\" CommandId=\"{}\" End=\"{}\">{}</rsp:Stream></rsp:Send>",
            escape(command_id),
            end,
            B64.encode(data)
        ),
    )
}

/// Ask for output; the service answers when it has some, when the command
/// ends, or after `timeout_secs` with the operation-timeout fault.
pub fn receive(to: &str, shell_id: &str, command_id: &str, timeout_secs: f64) -> Request {
    envelope(
        to,
        &format!("{SHELL_NS}/Receive"),
        Some(shell_id),
        &[("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")],
        timeout_secs,
        &format!(
            "<rsp:Receive><rsp:DesiredStream CommandId=\"{}\">stdout stderr</rsp:DesiredStream></rsp:Receive>",
            escape(command_id)
        ),
    )
}

/// Terminate a command (also what ends a finished command's bookkeeping).
pub fn signal_terminate(to: &str, shell_id: &str, command_id: &str, timeout_secs: f64) -> Request {
    envelope(
        to,
        &format!("{SHELL_NS}/Signal"),
        Some(shell_id),
        &[],
        timeout_secs,
        &format!(
            "<rsp:Signal CommandId=\"{}\"><rsp:Code>{SHELL_NS}/signal/terminate</rsp:Code></rsp:Signal>",
            escape(command_id)
        ),
    )
}

/// Delete (close) the shell and everything still running in it.
pub fn delete_shell(to: &str, shell_id: &str, timeout_secs: f64) -> Request {
    envelope(
        to,
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
        Some(shell_id),
        &[],
        timeout_secs,
        "",
    )
}

/// A SOAP fault, with the WS-Management code and text when the service gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    pub code: Option<u64>,
    pub subcode: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason.trim())?;
        match (&self.code, &self.subcode) {
            (Some(code), _) => write!(f, " (WS-Management fault {code})"),
            (None, Some(sub)) => write!(f, " ({sub})"),
            (None, None) => Ok(()),
        }
    }
}

/// An element of a parsed answer: local name, attributes, text, children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All descendants (depth first) named `name`.
    fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Node>) {
        for child in &self.children {
            if child.name == name {
                out.push(child);
            }
            child.find_all(name, out);
        }
    }

    fn find(&self, name: &str) -> Option<&Node> {
        let mut found = Vec::new();
        self.find_all(name, &mut found);
        found.into_iter().next()
    }
}

fn parse(xml: &[u8]) -> Result<Node, String> {
    let mut reader = Reader::from_reader(xml);
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut buf = Vec::new();
    let open = |e: &quick_xml::events::BytesStart| Node {
        name: e.local_name().as_ref().to_string(),
        attrs: e
            .attributes()
            .flatten()
            .map(|a| {
                (
                    a.key.local_name().as_ref().to_string(),
                    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect(),
        ..Node::default()
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("the answer is not XML: {e}"))?;
        match event {
            Event::Start(e) => stack.push(open(&e)),
            Event::Empty(e) => {
                let node = open(&e);
                stack.last_mut().expect("root").children.push(node);
            }
            Event::End(_) => {
                let node = stack.pop().expect("balanced");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Err("the answer is not balanced XML".into()),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        top.text.push(c);
                    } else {
                        top.text.push_str(match r.as_ref() {
                            "lt" => "<",
                            "gt" => ">",
                            "amp" => "&",
                            "quot" => "\"",
                            "apos" => "'",
                            _ => "",
                        });
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match (stack.pop(), stack.is_empty()) {
        (Some(root), true) => Ok(root),
        _ => Err("the answer is truncated XML".into()),
    }
}

/// The fault in an answer, if it is one.
pub fn parse_fault(xml: &[u8]) -> Option<Fault> {
    let root = parse(xml).ok()?;
    let fault = root.find("Fault")?;
    let code = fault
        .find("WSManFault")
        .and_then(|f| f.attr("Code"))
        .and_then(|c| c.trim().parse().ok());
    let subcode = fault
        .find("Subcode")
        .and_then(|s| s.find("Value"))
        .map(|v| v.text.trim().to_string());
    let message = fault
        .find("WSManFault")
        .and_then(|f| f.find("Message"))
        .map(collect_text)
        .filter(|m| !m.trim().is_empty());
    let reason = message.or_else(|| fault.find("Text").map(|t| t.text.clone()));
    Some(Fault {
        code,
        subcode,
        reason: reason
            .unwrap_or_else(|| "(the fault has no text)".into())
            .trim()
            .to_string(),
    })
}

fn collect_text(node: &Node) -> String {
    let mut text = node.text.clone();
    for child in &node.children {
        text.push_str(&collect_text(child));
    }
    text
}

/// The ShellId of a Create answer.
pub fn parse_shell_id(xml: &[u8]) -> Result<String, String> {
    let root = parse(xml)?;
    let mut selectors = Vec::new();
    root.find_all("Selector", &mut selectors);
    selectors
        .into_iter()
        .find(|s| s.attr("Name") == Some("ShellId"))
        .map(|s| s.text.trim().to_string())
        .or_else(|| root.find("ShellId").map(|s| s.text.trim().to_string()))
        .ok_or_else(|| "the Create answer has no ShellId".into())
}

/// The CommandId of a Command answer.
pub fn parse_command_id(xml: &[u8]) -> Result<String, String> {
    parse(xml)?
        .find("CommandId")
        .map(|c| c.text.trim().to_string())
        .ok_or_else(|| "the Command answer has no CommandId".into())
}

/// The answer's RelatesTo (the MessageID of the request it answers).
pub fn parse_relates_to(xml: &[u8]) -> Option<String> {
    parse(xml)
        .ok()?
        .find("RelatesTo")
        .map(|r| r.text.trim().to_string())
}

/// What one Receive returned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Output pieces in the order the service sent them.
    pub chunks: Vec<(super::super::Stream, Vec<u8>)>,
    /// `Some(exit code)` once the command is done.
    pub exit_code: Option<i32>,
}

pub fn parse_receive(xml: &[u8]) -> Result<Received, String> {
    use super::super::Stream;
    let root = parse(xml)?;
    let mut received = Received::default();
    let mut streams = Vec::new();
    root.find_all("Stream", &mut streams);
    for stream in streams {
        let data = stream.text.trim();
        if data.is_empty() {
            continue;
        }
        let bytes = B64
            .decode(data)
            .map_err(|e| format!("a Receive stream is not base64: {e}"))?;
        let which = match stream.attr("Name") {
            Some("stderr") => Stream::Stderr,
            _ => Stream::Stdout,
        };
        received.chunks.push((which, bytes));
    }
    if let Some(state) = root.find("CommandState")
        && state.attr("State").is_some_and(|s| s.ends_with("/Done"))
    {
        let code = state
            .find("ExitCode")
            .and_then(|c| c.text.trim().parse::<i64>().ok())
            .unwrap_or(-1);
        // Windows exit codes are u32 (0xC0000005 ...): keep their bits.
        received.exit_code = Some(code as i32);
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Stream;

    const RECEIVE: &str = r#"<?xml version="1.0" ?>
<s:Envelope xml:lang="en-US" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:s="http://www.w3.org/2003/05/soap-envelope">
    <s:Header><a:RelatesTo>uuid:1</a:RelatesTo></s:Header>
    <s:Body>
        <rsp:ReceiveResponse>
            <rsp:Stream CommandId="C" Name="stdout">aGVsbG8K</rsp:Stream>
            <rsp:Stream Name="stderr" CommandId="C">b29wcw==</rsp:Stream>
            <rsp:Stream CommandId="C" End="true" Name="stdout"/>
            <rsp:CommandState CommandId="C" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done">
                <rsp:ExitCode>3</rsp:ExitCode>
            </rsp:CommandState>
        </rsp:ReceiveResponse>
    </s:Body>
</s:Envelope>"#;

    #[test]
    fn parses_receive() {
        let r = parse_receive(RECEIVE.as_bytes()).unwrap();
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(
            r.chunks,
            vec![
                (Stream::Stdout, b"hello\n".to_vec()),
                (Stream::Stderr, b"oops".to_vec())
            ]
        );
        assert_eq!(
            parse_relates_to(RECEIVE.as_bytes()).as_deref(),
            Some("uuid:1")
        );
    }

    #[test]
    fn parses_fault() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="x"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">Timed out &amp; so on</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858793" Machine="m"><f:Message>The operation timed out.</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"#;
        let f = parse_fault(xml.as_bytes()).unwrap();
        assert_eq!(f.code, Some(FAULT_OPERATION_TIMEOUT));
        assert_eq!(f.subcode.as_deref(), Some("w:TimedOut"));
        assert_eq!(f.reason, "The operation timed out.");
    }

    #[test]
    fn escapes_command_line() {
        let r = command("http://h/wsman", "S", "echo <a> & 'b'", true, 20.0);
        assert!(r.body.contains("echo &lt;a&gt; &amp; &apos;b&apos;"));
        assert!(r.body.contains(&r.message_id));
    }
}
