//! Redaction: replacing every form a secret can take with `***`, in bytes.
//!
//! A secret does not reach output only as itself. A multi-line value (a
//! private key) comes back a line at a time, and a failing step's error
//! quotes just the last line of stderr; a Windows endpoint writes UTF-16LE;
//! a legacy tool writes Latin-1 or Windows-1252; the templates' own filters
//! (`sh_quote`, `ps_quote`, `json`, `regex_escape`) turn a value into quoted
//! or escaped text. So a [`Redactor`] is built from the *forms* of each
//! value ([`forms_of`]), and searches each form in each encoding with one
//! Aho-Corasick automaton over raw bytes, before anything is decoded (a
//! lossy UTF-8 decoding would otherwise destroy the Latin-1 or UTF-16 bytes
//! it must find). Each form is replaced by `***` in the encoding it was
//! found in, so the text around it decodes as before.
//!
//! Output can arrive in chunks, and be kept only in part (a head and a
//! tail): [`StreamRedactor`] holds back the bytes that could begin a secret
//! until the next chunk says whether they do, and [`Redactor::redact_cut`]
//! masks what is left of a secret at an edge where output was cut.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::quote::{ps_quote, regex_escape, sh_quote};

pub const MASK: &str = "***";

/// Secrets shorter than this are refused: masking `e` turns `hello` into
/// `h***llo`, which gives the secret away. Lines of a multi-line secret
/// shorter than this are masked only together with the lines around them.
pub const MIN_SECRET_CHARS: usize = 4;

/// The tool's own filters that a secret may go through: each maps every
/// character on its own, so the filtered form of a value can be computed
/// here and masked wherever it appears (even inside a longer filtered text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFilter {
    ShQuote,
    PsQuote,
    RegexEscape,
    Json,
}

impl SecretFilter {
    pub const ALL: [SecretFilter; 4] = [
        SecretFilter::ShQuote,
        SecretFilter::PsQuote,
        SecretFilter::RegexEscape,
        SecretFilter::Json,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecretFilter::ShQuote => "sh_quote",
            SecretFilter::PsQuote => "ps_quote",
            SecretFilter::RegexEscape => "regex_escape",
            SecretFilter::Json => "json",
        }
    }

    /// What `text` becomes inside this filter's output (quotes left out:
    /// the value of a quoted list item or JSON field is only the inside).
    pub fn inner(self, text: &str) -> String {
        let strip = |quoted: String| quoted[1..quoted.len() - 1].to_string();
        match self {
            SecretFilter::ShQuote => strip(sh_quote(text)),
            SecretFilter::PsQuote => strip(ps_quote(text)),
            SecretFilter::RegexEscape => regex_escape(text),
            SecretFilter::Json => strip(serde_json::to_string(text).expect("a string serializes")),
        }
    }

    /// "sh_quote, ps_quote, regex_escape or json", for error messages.
    pub fn allowed_list() -> String {
        let names: Vec<&str> = SecretFilter::ALL.iter().map(|f| f.name()).collect();
        format!(
            "{} or {}",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        )
    }
}

/// The text forms in which `value` can show up in output: itself, with LF
/// or CRLF line ends, each of its lines of at least [`MIN_SECRET_CHARS`]
/// (trimmed, as error messages quote them), and each of those as every
/// [`SecretFilter`] writes it.
pub fn forms_of(value: &str) -> Vec<String> {
    let mut base = vec![value.to_string()];
    if value.contains('\n') {
        let lf = value.replace("\r\n", "\n");
        base.push(lf.replace('\n', "\r\n"));
        for line in lf.lines() {
            let line = line.trim();
            if line.chars().count() >= MIN_SECRET_CHARS {
                base.push(line.to_string());
            }
        }
        base.push(lf);
    }
    let mut forms = Vec::new();
    for form in &base {
        push_new(&mut forms, form.clone());
        for filter in SecretFilter::ALL {
            push_new(&mut forms, filter.inner(form));
        }
    }
    forms
}

fn push_new<T: PartialEq>(into: &mut Vec<T>, item: T) {
    if !into.contains(&item) {
        into.push(item);
    }
}

const MASK_UTF16LE: &[u8] = b"*\0*\0*\0";
const MASK_UTF16BE: &[u8] = b"\0*\0*\0*";

/// `form` in each encoding an endpoint may write it in, each with the mask
/// in the same encoding.
fn encodings(form: &str) -> Vec<(Vec<u8>, &'static [u8])> {
    let mut out: Vec<(Vec<u8>, &'static [u8])> = vec![(form.as_bytes().to_vec(), MASK.as_bytes())];
    let utf16: Vec<u16> = form.encode_utf16().collect();
    out.push((
        utf16.iter().flat_map(|u| u.to_le_bytes()).collect(),
        MASK_UTF16LE,
    ));
    out.push((
        utf16.iter().flat_map(|u| u.to_be_bytes()).collect(),
        MASK_UTF16BE,
    ));
    if !form.is_ascii() {
        if form.chars().all(|c| (c as u32) <= 0xFF) {
            out.push((form.chars().map(|c| c as u8).collect(), MASK.as_bytes()));
        }
        let (cp1252, _, unmappable) = encoding_rs::WINDOWS_1252.encode(form);
        if !unmappable {
            out.push((cp1252.into_owned(), MASK.as_bytes()));
        }
    }
    let mut unique = Vec::new();
    for pair in out {
        if !unique.iter().any(|(n, _): &(Vec<u8>, _)| *n == pair.0) {
            unique.push(pair);
        }
    }
    unique
}

/// Replaces secret values, in every form and encoding, with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    needles: Vec<Vec<u8>>,
    masks: Vec<&'static [u8]>,
    /// For needles that are a form in UTF-8: that form (filters that see
    /// it in their input register what they make of it).
    texts: Vec<Option<String>>,
    longest: usize,
}

impl Redactor {
    /// A redactor for `values` (each expanded into its [`forms_of`]).
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        Redactor::with_forms(values, std::iter::empty())
    }

    /// A redactor for `values` and for `extra` forms taken as they are
    /// (forms that filters made of a secret while templates rendered).
    pub fn with_forms(
        values: impl IntoIterator<Item = String>,
        extra: impl IntoIterator<Item = String>,
    ) -> Redactor {
        let mut forms: Vec<String> = Vec::new();
        for value in values {
            if value.is_empty() || value == MASK {
                continue;
            }
            for form in forms_of(&value) {
                push_new(&mut forms, form);
            }
        }
        for form in extra {
            push_new(&mut forms, form);
        }
        let mut redactor = Redactor::default();
        for form in forms.into_iter().filter(|f| !f.is_empty()) {
            for (i, (needle, mask)) in encodings(&form).into_iter().enumerate() {
                if redactor.needles.contains(&needle) {
                    continue;
                }
                redactor.longest = redactor.longest.max(needle.len());
                redactor.needles.push(needle);
                redactor.masks.push(mask);
                redactor.texts.push((i == 0).then(|| form.clone()));
            }
        }
        if !redactor.needles.is_empty() {
            // Leftmost-longest: a value containing another, or a line of
            // itself, is replaced whole.
            redactor.matcher = Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&redactor.needles)
                    .expect("secret patterns build"),
            );
        }
        redactor
    }

    pub fn redact(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) if m.is_match(text) => self.redact_to_text(text.as_bytes()),
            _ => text.to_string(),
        }
    }

    /// `bytes` with every secret masked, still in their own encoding.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.matcher {
            Some(m) => m.replace_all_bytes(bytes, &self.masks),
            None => bytes.to_vec(),
        }
    }

    /// `bytes` masked, then decoded (lossily) as UTF-8: masking first, so
    /// that a secret written in Latin-1 or UTF-16 is found before its
    /// bytes are lost to the decoding.
    pub fn redact_to_text(&self, bytes: &[u8]) -> String {
        String::from_utf8_lossy(&self.redact_bytes(bytes)).into_owned()
    }

    /// Whether `bytes` hold a secret in any of its forms.
    pub fn finds_secret(&self, bytes: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(bytes))
    }

    /// The secret forms (as text) found in `text`.
    pub fn forms_in(&self, text: &str) -> Vec<String> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for m in matcher.find_iter(text) {
            if let Some(form) = &self.texts[m.pattern().as_usize()] {
                push_new(&mut found, form.clone());
            }
        }
        found
    }

    /// `bytes` masked, where the output they come from was cut just before
    /// them (`cut_before`) or just after them (`cut_after`): what is left
    /// there of a secret, however short, is masked too.
    pub fn redact_cut(&self, bytes: &[u8], cut_before: bool, cut_after: bool) -> Vec<u8> {
        let mut out = self.redact_bytes(bytes);
        if cut_after && let Some((len, mask)) = self.partial(&out, true) {
            out.truncate(out.len() - len);
            out.extend_from_slice(mask);
        }
        if cut_before && let Some((len, mask)) = self.partial(&out, false) {
            out.splice(..len, mask.iter().copied());
        }
        out
    }

    /// The longest end of `bytes` that begins a secret (`at_end`), or the
    /// longest start of `bytes` that ends one; never all of the secret.
    fn partial(&self, bytes: &[u8], at_end: bool) -> Option<(usize, &'static [u8])> {
        let mut best: Option<(usize, &'static [u8])> = None;
        for (needle, mask) in self.needles.iter().zip(&self.masks) {
            let longest = needle.len().min(bytes.len() + 1);
            let better = best.map_or(1, |(b, _)| b + 1);
            let found = (better..longest).rev().find(|&len| {
                if at_end {
                    bytes.ends_with(&needle[..len])
                } else {
                    bytes.starts_with(&needle[needle.len() - len..])
                }
            });
            if let Some(len) = found {
                best = Some((len, mask));
            }
        }
        best
    }
}

/// Redacts output that arrives in chunks: a secret split across two chunks
/// is masked all the same. Bytes that could be the start of a secret are
/// held back until the next chunk (or [`StreamRedactor::finish`]).
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    pending: Vec<u8>,
}

impl StreamRedactor {
    pub fn new(redactor: Arc<Redactor>) -> StreamRedactor {
        StreamRedactor {
            redactor,
            pending: Vec::new(),
        }
    }

    /// Takes the next chunk; returns what can be passed on, masked.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let Some(matcher) = &self.redactor.matcher else {
            return std::mem::take(&mut self.pending);
        };
        // A match starting before `settled` has all the bytes it could
        // need already, so the leftmost-longest choice there is final.
        let settled = self
            .pending
            .len()
            .saturating_sub(self.redactor.longest.saturating_sub(1));
        let mut out = Vec::with_capacity(self.pending.len());
        let mut at = 0;
        for m in matcher.find_iter(&self.pending) {
            if m.start() >= settled {
                break;
            }
            out.extend_from_slice(&self.pending[at..m.start()]);
            out.extend_from_slice(self.redactor.masks[m.pattern().as_usize()]);
            at = m.end();
        }
        let keep_from = settled.max(at);
        out.extend_from_slice(&self.pending[at..keep_from]);
        self.pending.drain(..keep_from);
        out
    }

    /// The end of the stream: the rest, masked.
    pub fn finish(self) -> Vec<u8> {
        self.redactor.redact_bytes(&self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        Redactor::new(values.iter().map(|v| v.to_string()))
    }

    #[test]
    fn redacts_values_and_their_quoted_forms() {
        let r = redactor(&["s3cr'et", "pa$$"]);
        assert_eq!(r.redact("KLPASSWD=s3cr'et /qn"), "KLPASSWD=*** /qn");
        assert_eq!(r.redact("KLPASSWD='s3cr''et'"), "KLPASSWD='***'");
        assert_eq!(r.redact("echo 's3cr'\\''et'"), "echo '***'");
        assert_eq!(r.redact("x pa$$ y pa$$"), "x *** y ***");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_longer_secret_is_redacted_whole() {
        let r = redactor(&["abcd", "abcdefgh"]);
        assert_eq!(r.redact("abcdefgh abcd"), "*** ***");
    }

    #[test]
    fn every_form_the_tools_filters_make_is_masked() {
        let value = "p\"a$s.w\\o'rd(1)";
        let r = redactor(&[value]);
        for filter in SecretFilter::ALL {
            let form = filter.inner(value);
            assert_ne!(form, value, "{} changes this value", filter.name());
            assert_eq!(r.redact(&format!("<{form}>")), "<***>", "{}", filter.name());
        }
        let json = serde_json::to_string(&serde_json::json!({ "pw": value })).unwrap();
        assert_eq!(r.redact(&json), r#"{"pw":"***"}"#);
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked_alone_and_with_crlf() {
        let key = "-----BEGIN KEY-----\n  b3BlbnNzaC1rZXktdjEAAAAA\nQ==\n-----END KEY-----";
        let r = redactor(&[key]);
        // A failing step's error quotes only the last line of stderr.
        assert_eq!(
            r.redact("exited with 1: b3BlbnNzaC1rZXktdjEAAAAA"),
            "exited with 1: ***"
        );
        assert_eq!(r.redact("-----END KEY-----"), "***");
        assert_eq!(r.redact(&key.replace('\n', "\r\n")), "***");
        assert_eq!(r.redact(&format!("got {key} back")), "got *** back");
        // A line too short to mask alone is masked with its neighbours,
        // and not wherever it happens to occur.
        assert_eq!(r.redact("Q== is base64 padding"), "Q== is base64 padding");
        assert!(!r.redact(key).contains("Q=="));
        // A secret written with CRLF is found with LF too.
        let crlf = redactor(&["first-line\r\nsecond-line"]);
        assert_eq!(crlf.redact("first-line\nsecond-line"), "***");
        assert_eq!(crlf.redact("second-line"), "***");
    }

    #[test]
    fn secrets_are_found_in_utf16_and_latin1_output_before_decoding() {
        let r = redactor(&["Kennwort-ä€"]);
        let utf16le: Vec<u8> = "pw=Kennwort-ä€\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let expect_le: Vec<u8> = "pw=***\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(r.redact_bytes(&utf16le), expect_le);
        let utf16be: Vec<u8> = "Kennwort-ä€"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(r.redact_bytes(&utf16be), MASK_UTF16BE);
        // Windows-1252: ä is 0xE4, € is 0x80.
        let cp1252 = b"pw=Kennwort-\xe4\x80 ok";
        assert_eq!(r.redact_to_text(cp1252), "pw=*** ok");
        // Latin-1 has no €: a value within Latin-1 is found in it.
        let latin = redactor(&["Straße-1"]);
        assert_eq!(latin.redact_to_text(b"x Stra\xdfe-1 y"), "x *** y");
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let r = Arc::new(redactor(&["hunter2-split"]));
        let text = b"before hunter2-split middle hunter2-split after";
        for size in 1..text.len() {
            let mut stream = StreamRedactor::new(Arc::clone(&r));
            let mut out = Vec::new();
            for chunk in text.chunks(size) {
                out.extend(stream.push(chunk));
            }
            out.extend(stream.finish());
            assert_eq!(out, b"before *** middle *** after", "chunks of {size}");
        }
    }

    #[test]
    fn what_is_left_of_a_secret_at_a_cut_is_masked() {
        let r = redactor(&["hunter2-cut"]);
        // The head of the output ends inside the secret, the tail starts inside it.
        assert_eq!(r.redact_cut(b"head hunt", false, true), b"head ***");
        assert_eq!(r.redact_cut(b"er2-cut tail", true, false), b"*** tail");
        assert_eq!(r.redact_cut(b"head hunt", false, false), b"head hunt");
        assert_eq!(r.redact_cut(b"plain", true, true), b"plain");
    }

    #[test]
    fn no_secrets_no_change() {
        let r = Redactor::default();
        assert_eq!(r.redact("abc"), "abc");
        assert_eq!(r.redact_bytes(b"\xff\xfe"), b"\xff\xfe");
        assert!(!r.finds_secret(b"abc"));
    }
}
