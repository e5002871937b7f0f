//! Making text from endpoints and inventories inert before it reaches a
//! terminal.
//!
//! A failing step's last stderr line, a host name from the inventory, an
//! error an endpoint sent: a terminal obeys whatever control sequences they
//! hold. An endpoint could set the window title, clear the screen or print
//! a forged green `OK` line; a host name with a newline could forge a whole
//! line of the run's output; a bidi override could make `failed` read as
//! something else. Every human reporter (live lines, progress bars, the
//! summary, `status`, the dry run, prompts) draws such text through
//! [`inert`], one function, so no reporter forgets a case.
//!
//! Escaped, not removed: a person reading the output should see that
//! something odd was there (`\e]0;owned\a`), and the text stays readable.
//! The HTML and JUnit reports clean text their own way ([`super::text`]).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character a terminal would act on written as an
/// escape: C0 controls (newline and tab included: in one line of output
/// they forge lines and columns), DEL, C1 controls, and the Unicode bidi
/// controls. ESC shows as `\e`, newline as `\n`, carriage return as `\r`,
/// tab as `\t`, the others as `\u{..}`.
pub fn inert(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\u{1b}' => out.push_str("\\e"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// C0, DEL, C1 (`char::is_control` is exactly those), and the characters
/// that reorder text: marks, embeddings, overrides and isolates.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn plain_text_is_left_as_it_is() {
        assert!(matches!(
            inert("C:\\Program Files\\Kaspersky Lab — 12.0"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_and_bidi_overrides_are_written_as_escapes() {
        assert_eq!(
            inert("\u{1b}]0;owned\u{7}\u{1b}[2J\r\n\u{9b}31m\u{7f}\u{202e}kO"),
            "\\e]0;owned\\u{7}\\e[2J\\r\\n\\u{9b}31m\\u{7f}\\u{202e}kO"
        );
    }
}
