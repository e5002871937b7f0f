//! What the HTML and JUnit renderings of a run share: making untrusted
//! text from the endpoints safe to embed, and reading the report's facts
//! (failing step, phase evidence, times) the same way in both.
//!
//! Everything in a [`Report`](super::run_json::Report) that came from a host
//! (names from the inventory, step output, error messages) is untrusted: it
//! may hold markup, ANSI colour codes or control characters that XML 1.0
//! forbids outright. [`clean`] turns it into printable text once, and
//! [`Esc`] escapes it as it is written, so neither renderer hand-escapes.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::run_json::{HostReport, StepReport};
use crate::run::StepStatus;

pub(crate) use super::summary::format_ms;

/// `text` without ANSI escape sequences and without the control characters
/// XML 1.0 and HTML forbid (tab, newline and carriage return stay); each
/// other control character becomes U+FFFD so that nothing vanishes silently.
pub fn clean(text: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            // CSI: ESC [ parameters/intermediates, then one final byte @..~.
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else if bad(c) {
            out.push('\u{FFFD}');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Displays untrusted text cleaned and escaped for XML and HTML, in element
/// content and in quoted attribute values alike.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quick_xml::escape::escape(clean(self.0)))
    }
}

/// The last `max_lines` lines of `text` (at most `max_chars` characters),
/// cleaned, with a note of what was left out: the end of a command's output
/// is where it says why it failed.
pub fn excerpt(text: &str, max_lines: usize, max_chars: usize) -> String {
    let text = clean(text.trim_end());
    let lines: Vec<&str> = text.lines().collect();
    let kept = &lines[lines.len().saturating_sub(max_lines)..];
    let mut out = kept.join("\n");
    if out.chars().count() > max_chars {
        let skip = out.chars().count() - max_chars;
        out = out.chars().skip(skip).collect();
    }
    let dropped = text.chars().count() - out.chars().count();
    if dropped > 0 {
        out.insert_str(0, &format!("[… {dropped} earlier characters not shown]\n"));
    }
    out
}

/// The snake_case name a status has in the JSON report.
pub fn name<T: Serialize>(status: T) -> String {
    crate::run::name_of(&status)
}

pub fn parse_time(time: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(time).ok()
}

/// An RFC 3339 time as people read it: `2026-11-22 07:53:19 UTC`.
pub fn show_time(time: &str) -> String {
    match parse_time(time) {
        Some(t) if t.offset().local_minus_utc() == 0 => {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        }
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => time.to_string(),
    }
}

/// Milliseconds from `start` to `end`, when both parse and are in order.
pub fn span_ms(start: Option<&str>, end: Option<&str>) -> Option<u64> {
    ms_between(parse_time(start?)?, parse_time(end?)?)
}

pub fn ms_between(start: DateTime<FixedOffset>, end: DateTime<FixedOffset>) -> Option<u64> {
    u64::try_from((end - start).num_milliseconds()).ok()
}

/// The earliest of some RFC 3339 times, compared as times (not as text).
pub fn earliest<'a>(times: impl IntoIterator<Item = &'a str>) -> Option<DateTime<FixedOffset>> {
    times.into_iter().filter_map(parse_time).min()
}

pub fn latest<'a>(times: impl IntoIterator<Item = &'a str>) -> Option<DateTime<FixedOffset>> {
    times.into_iter().filter_map(parse_time).max()
}

/// How long a host took: its start to its end, or else its steps' time.
pub fn host_ms(host: &HostReport) -> u64 {
    span_ms(host.started_at.as_deref(), host.finished_at.as_deref())
        .unwrap_or_else(|| host.steps.iter().map(|s| s.duration_ms).sum())
}

pub fn step_failed(status: StepStatus) -> bool {
    matches!(status, StepStatus::Failed | StepStatus::TimedOut)
}

/// The step that made the host fail: its last failed or timed-out step.
pub fn failing_step(host: &HostReport) -> Option<&StepReport> {
    host.steps.iter().rev().find(|s| step_failed(s.status))
}

/// How a phase went on a host, from its steps: the evidence that the old
/// product is gone (`uninstall`) and the new one works (`verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseOutcome {
    /// No step of that phase ran or was recorded.
    None,
    /// Every step was skipped (for instance, nothing to uninstall).
    Skipped,
    /// At least one step ran and every step that ran was ok.
    Ok,
    Failed,
}

impl PhaseOutcome {
    pub fn label(self) -> &'static str {
        match self {
            PhaseOutcome::None => "not run",
            PhaseOutcome::Skipped => "skipped",
            PhaseOutcome::Ok => "ok",
            PhaseOutcome::Failed => "failed",
        }
    }
}

/// The steps of `phase` on `host`, how they went, and when the last ended.
pub fn phase<'a>(host: &'a HostReport, phase: &str) -> (Vec<&'a StepReport>, PhaseOutcome) {
    let steps: Vec<&StepReport> = host.steps.iter().filter(|s| &*s.phase == phase).collect();
    let outcome = if steps.is_empty() {
        PhaseOutcome::None
    } else if steps.iter().any(|s| step_failed(s.status)) {
        PhaseOutcome::Failed
    } else if steps.iter().all(|s| s.status == StepStatus::Skipped) {
        PhaseOutcome::Skipped
    } else {
        PhaseOutcome::Ok
    };
    (steps, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_colour_codes_and_replaces_other_controls() {
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m ok"), "red ok");
        assert_eq!(clean("a\u{0}b\u{7}c\td\n"), "a\u{FFFD}b\u{FFFD}c\td\n");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn esc_escapes_markup_and_quotes() {
        assert_eq!(
            Esc("<script>alert('x') & \"y\"</script>").to_string(),
            "&lt;script&gt;alert(&apos;x&apos;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn excerpt_keeps_the_end_and_says_what_it_dropped() {
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(&text, 3, 1000);
        assert!(e.ends_with("line 98\nline 99\nline 100"), "{e}");
        assert!(e.starts_with("[… "), "{e}");
        assert_eq!(excerpt("short", 3, 1000), "short");
    }

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(
            show_time("2026-11-22T07:53:19.123Z"),
            "2026-11-22 07:53:19 UTC"
        );
        assert_eq!(
            span_ms(
                Some("2026-11-22T07:53:19.000Z"),
                Some("2026-11-22T07:55:20.500Z")
            ),
            Some(121_500)
        );
        assert_eq!(span_ms(Some("garbage"), Some("2026-11-22T07:55:20Z")), None);
    }
}
