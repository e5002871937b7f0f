//! A finished run as JUnit XML (`orchestrate report --format junit`), so a
//! CI dashboard (Jenkins, GitLab, Azure DevOps) can show a rollout.
//!
//! The mapping: one `<testsuite>` per client, one `<testcase>` per host
//! (`classname` = client). A host that failed, whose rollback failed, or that
//! was unreachable carries a `<failure>` whose `type` is the host's status
//! and whose body names the failing step, its output and the rollback's
//! outcome; a skipped or not-started host carries `<skipped>`. Every host
//! that ran lists its steps in `<system-out>`. JUnit has no notion of a
//! rollback or a halt, so `errors` stays 0 and the client's status and halt
//! reason go in `<properties>`. A host whose baseline was compared has a
//! second test case, `HOST baseline`, failing with the difference when
//! anything changed that the playbook did not expect.
//!
//! The XML is written with `quick-xml`'s writer, which escapes attribute
//! values and text; untrusted text is [`clean`]ed first because XML 1.0 has
//! no way at all to carry most control characters.

use std::fmt::Write as _;
use std::io;

use chrono::{DateTime, FixedOffset};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::baseline;
use super::run_json::{ClientReport, HostReport, Report, counts};
use super::text::{self, clean, excerpt, failing_step, host_ms};
use crate::run::HostStatus;

/// How much of a failing step's output goes in a `<failure>` body.
const OUTPUT_LINES: usize = 60;
const OUTPUT_CHARS: usize = 8_000;

pub fn render(report: &Report) -> String {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_report(&mut writer, report).expect("writing XML to memory does not fail");
    let mut xml = String::from_utf8(writer.into_inner()).expect("the writer writes UTF-8");
    xml.push('\n');
    xml
}

/// The counts a `<testsuite>` (or `<testsuites>`) carries.
struct Tally {
    tests: usize,
    failures: usize,
    skipped: usize,
    ms: u64,
    /// When the first wave started.
    started: Option<DateTime<FixedOffset>>,
}

impl Tally {
    fn of(client: &ClientReport) -> Tally {
        let c = counts(client);
        let baselines: Vec<&HostReport> = client
            .hosts
            .iter()
            .filter(|h| baseline::compared(h))
            .collect();
        let started = text::earliest(client.waves.iter().filter_map(|w| w.started_at.as_deref()));
        let finished = text::latest(client.waves.iter().filter_map(|w| w.finished_at.as_deref()));
        Tally {
            tests: client.hosts.len() + baselines.len(),
            failures: HostStatus::ALL
                .iter()
                .filter(|s| s.is_failure())
                .map(|s| c[s])
                .sum::<usize>()
                + baselines.iter().filter(|h| baseline::regressed(h)).count(),
            skipped: c[&HostStatus::Skipped] + c[&HostStatus::NotStarted],
            ms: started
                .zip(finished)
                .and_then(|(s, f)| text::ms_between(s, f))
                .unwrap_or_else(|| client.hosts.iter().map(host_ms).sum()),
            started,
        }
    }

    fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![
            ("tests", self.tests.to_string()),
            ("failures", self.failures.to_string()),
            ("errors", "0".to_string()),
            ("skipped", self.skipped.to_string()),
            ("time", seconds(self.ms)),
        ];
        if let Some(started) = self.started {
            attrs.push(("timestamp", timestamp(started)));
        }
        attrs
    }
}

fn write_report(w: &mut Writer<Vec<u8>>, report: &Report) -> io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let tallies: Vec<Tally> = report.clients.iter().map(Tally::of).collect();
    let total = Tally {
        tests: tallies.iter().map(|t| t.tests).sum(),
        failures: tallies.iter().map(|t| t.failures).sum(),
        skipped: tallies.iter().map(|t| t.skipped).sum(),
        ms: text::span_ms(Some(&report.started_at), report.finished_at.as_deref())
            .unwrap_or_else(|| tallies.iter().map(|t| t.ms).sum()),
        started: text::parse_time(&report.started_at),
    };
    let kind = if report.rehearsal { "rehearsal" } else { "run" };
    let name = format!("orchestrate {kind} {}", report.run_id);
    let mut attrs = vec![("name", one_line(&name))];
    attrs.extend(total.attributes());
    w.create_element("testsuites")
        .with_attributes(attrs.iter().map(|(k, v)| (*k, v.as_str())))
        .write_inner_content(|w| {
            for (id, (client, tally)) in report.clients.iter().zip(&tallies).enumerate() {
                write_suite(w, report, id, client, tally)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_suite(
    w: &mut Writer<Vec<u8>>,
    report: &Report,
    id: usize,
    client: &ClientReport,
    tally: &Tally,
) -> io::Result<()> {
    let mut attrs = vec![
        ("name", clean(&client.name).into_owned()),
        ("id", id.to_string()),
    ];
    attrs.extend(tally.attributes());
    if tally.started.is_none()
        && let Some(run_started) = text::parse_time(&report.started_at)
    {
        attrs.push(("timestamp", timestamp(run_started)));
    }
    let mut properties = vec![
        ("run_id", report.run_id.clone()),
        ("playbook", report.playbook.clone()),
        (
            "client_status",
            client
                .status
                .map(text::name)
                .unwrap_or_else(|| "running".into()),
        ),
    ];
    if let Some(reason) = &client.halted {
        properties.push(("halted", reason.clone()));
    }
    if report.check {
        properties.push(("check_mode", "true".into()));
    }
    w.create_element("testsuite")
        .with_attributes(attrs.iter().map(|(k, v)| (*k, v.as_str())))
        .write_inner_content(|w| {
            w.create_element("properties").write_inner_content(|w| {
                for (name, value) in &properties {
                    w.create_element("property")
                        .with_attribute(("name", *name))
                        .with_attribute(("value", one_line(value).as_str()))
                        .write_empty()?;
                }
                Ok(())
            })?;
            for host in &client.hosts {
                write_case(w, client, host)?;
                if baseline::compared(host) {
                    write_baseline_case(w, client, host)?;
                }
            }
            Ok(())
        })?;
    Ok(())
}

fn write_case(w: &mut Writer<Vec<u8>>, client: &ClientReport, host: &HostReport) -> io::Result<()> {
    let case = w
        .create_element("testcase")
        .with_attribute(("name", clean(&host.name).as_ref()))
        .with_attribute(("classname", clean(&client.name).as_ref()))
        .with_attribute(("time", seconds(host_ms(host)).as_str()));
    case.write_inner_content(|w| {
        match host.status {
            HostStatus::Failed
            | HostStatus::RolledBackToUnsupportedProduct
            | HostStatus::RollbackFailed
            | HostStatus::Unreachable => {
                w.create_element("failure")
                    .with_attribute(("message", failure_message(host).as_str()))
                    .with_attribute(("type", host.status.as_str()))
                    .write_text_content(BytesText::new(&failure_body(host)))?;
            }
            HostStatus::Skipped | HostStatus::NotStarted => {
                let message = match &host.error {
                    Some(reason) => format!("{}: {reason}", host.status.as_str()),
                    None => host.status.as_str().to_string(),
                };
                w.create_element("skipped")
                    .with_attribute(("message", one_line(&message).as_str()))
                    .write_empty()?;
            }
            HostStatus::Succeeded => {}
        }
        if !host.steps.is_empty() || !host.rollback.is_empty() {
            w.create_element("system-out")
                .write_text_content(BytesText::new(&step_log(host)))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A host's baseline as a test case of its own (`HOST baseline`): a
/// regression, on a `fail` probe or a `warn` one, is a failure whose body
/// is the difference; a host whose only differences were expected passes.
fn write_baseline_case(
    w: &mut Writer<Vec<u8>>,
    client: &ClientReport,
    host: &HostReport,
) -> io::Result<()> {
    let name = format!("{} baseline", host.name);
    let case = w
        .create_element("testcase")
        .with_attribute(("name", clean(&name).as_ref()))
        .with_attribute(("classname", clean(&client.name).as_ref()))
        .with_attribute(("time", "0.000"));
    let diff = clean(&baseline::diff_lines(&host.baseline)).into_owned();
    case.write_inner_content(|w| {
        if baseline::regressed(host) {
            let what: Vec<String> = host
                .baseline
                .iter()
                .filter(|d| d.fails_host() || d.warns())
                .map(|d| d.summary())
                .collect();
            let kind = if host.baseline.iter().any(|d| d.fails_host()) {
                "baseline_regression"
            } else {
                "baseline_warning"
            };
            w.create_element("failure")
                .with_attribute(("message", one_line(&what.join("; ")).as_str()))
                .with_attribute(("type", kind))
                .write_text_content(BytesText::new(&diff))?;
        } else {
            w.create_element("system-out")
                .write_text_content(BytesText::new(&diff))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One line: what failed, where, and whether the endpoint was put back.
fn failure_message(host: &HostReport) -> String {
    let what = match (host.status, failing_step(host)) {
        (HostStatus::Unreachable, _) => match &host.error {
            Some(error) => format!("unreachable: {error}"),
            None => "unreachable".to_string(),
        },
        (_, Some(step)) => {
            let mut what = format!(
                "step `{}` ({}) {}",
                step.name,
                step.phase,
                text::name(step.status).replace('_', " ")
            );
            if let Some(code) = step.exit_code {
                let _ = write!(what, " with exit code {code}");
            }
            what
        }
        (_, None) => host.error.clone().unwrap_or_else(|| "failed".into()),
    };
    let outcome = match host.status {
        HostStatus::Failed => "; rolled back",
        HostStatus::RolledBackToUnsupportedProduct => {
            "; rolled back to a product that no longer gets updates"
        }
        HostStatus::RollbackFailed => "; ROLLBACK FAILED, needs a person",
        _ => "",
    };
    one_line(&format!("{what}{outcome}"))
}

fn failure_body(host: &HostReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "host {}: {}", host.name, host.status.as_str());
    if let Some(error) = &host.error {
        let _ = writeln!(out, "error: {error}");
    }
    if let Some(step) = failing_step(host) {
        let _ = writeln!(
            out,
            "failing step: {} / {}: {}, exit code {}, {} attempt(s), {}",
            step.phase,
            step.name,
            text::name(step.status),
            step.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
            step.attempts,
            text::format_ms(step.duration_ms)
        );
        if let Some(detail) = &step.detail {
            let _ = writeln!(out, "detail: {detail}");
        }
        for (label, output) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
            match output.as_deref() {
                Some(o) if !o.trim().is_empty() => {
                    let _ = writeln!(
                        out,
                        "--- {label}\n{}",
                        excerpt(o, OUTPUT_LINES, OUTPUT_CHARS)
                    );
                }
                Some(_) => {}
                None => {
                    let _ = writeln!(out, "--- {label}: not recorded (sensitive step)");
                }
            }
        }
    }
    if baseline::regressed(host) {
        out.push_str(&baseline::diff_lines(&host.baseline));
    }
    if host.status != HostStatus::Unreachable {
        let rollback_ok = host.rollback.iter().all(|r| !text::step_failed(r.status));
        let _ = writeln!(
            out,
            "rollback: {} ({} step(s))",
            if rollback_ok { "succeeded" } else { "FAILED" },
            host.rollback.len()
        );
        for r in &host.rollback {
            let _ = write!(out, "  {:9} {}", text::name(r.status), r.name);
            if let Some(code) = r.exit_code {
                let _ = write!(out, " (exit code {code})");
            }
            if let Some(detail) = &r.detail {
                let _ = write!(out, ": {detail}");
            }
            out.push('\n');
            if text::step_failed(r.status)
                && let Some(err) = r.stderr.as_deref().filter(|e| !e.trim().is_empty())
            {
                let _ = writeln!(out, "{}", excerpt(err, 20, 2_000));
            }
        }
    }
    clean(&out).into_owned()
}

/// Every step and rollback step of a host, one a line, for `<system-out>`.
fn step_log(host: &HostReport) -> String {
    let mut out = String::new();
    for s in &host.steps {
        let _ = writeln!(
            out,
            "{} {:9} {} / {} (exit {}, {} attempt(s), {}){}",
            s.finished_at,
            text::name(s.status),
            s.phase,
            s.name,
            s.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            s.attempts,
            text::format_ms(s.duration_ms),
            s.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    for r in &host.reboots {
        let step = match r.step.as_str() {
            "" => String::new(),
            step => format!(" for step {step}"),
        };
        let _ = writeln!(out, "{} rebooted {step}; {}", r.at, r.who());
    }
    for r in &host.rollback {
        let _ = writeln!(
            out,
            "{} {:9} rollback / {} (exit {})",
            r.finished_at,
            text::name(r.status),
            r.name,
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    clean(&out).into_owned()
}

/// Attribute text on one line: XML parsers turn newlines in attributes into
/// spaces anyway, and a dashboard shows a message as one line.
fn one_line(text: &str) -> String {
    clean(text).split_whitespace().collect::<Vec<_>>().join(" ")
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// JUnit's `timestamp` is an ISO 8601 time without a zone; it is given in UTC.
fn timestamp(time: DateTime<FixedOffset>) -> String {
    time.with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}
