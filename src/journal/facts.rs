//! What an event changes in the journal's tables (`hosts`, `steps`,
//! `rollbacks`, `runs`), decided once here so that the SQLite and the
//! PostgreSQL backends only say it in their own SQL.

use crate::run::{Event, name_of};

/// One row change an event makes, beside the event itself.
pub(crate) enum Fact<'a> {
    /// A host's row, inserted or updated (`wave` kept when `None`).
    Host {
        client: &'a str,
        host: &'a str,
        wave: Option<i64>,
        status: &'a str,
        error: Option<&'a str>,
        protection_gap_ms: Option<i64>,
    },
    Step {
        host: &'a str,
        index: i64,
        phase: &'a str,
        name: &'a str,
        status: String,
        exit_code: Option<i32>,
        attempts: i64,
        duration_ms: i64,
        detail: Option<&'a str>,
        stdout: Option<&'a str>,
        stderr: Option<&'a str>,
    },
    Rollback {
        host: &'a str,
        name: &'a str,
        status: String,
        exit_code: Option<i32>,
        detail: Option<&'a str>,
    },
    /// The run goes on: no longer finished.
    Reopened,
    Finished {
        finished_at: &'a str,
        status: String,
    },
}

/// The event's `event` tag (`host_started`, ...), the `kind` column, read
/// from `data`, the event as the journal stores it (serde writes an
/// internally tagged enum's tag first). Reading it there spares turning
/// every event, output and all, into a JSON tree a second time.
pub(crate) fn kind_of(event: &Event, data: &str) -> String {
    let tag = data
        .strip_prefix("{\"event\":\"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.contains('\\'));
    match tag {
        Some(tag) => tag.to_string(),
        None => serde_json::to_value(event)
            .ok()
            .and_then(|v| v.get("event").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_default(),
    }
}

pub(crate) fn fact_of(event: &Event) -> Option<Fact<'_>> {
    Some(match event {
        Event::HostStarted { client, host, wave } => Fact::Host {
            client,
            host,
            wave: Some(*wave as i64),
            status: "running",
            error: None,
            protection_gap_ms: None,
        },
        Event::HostFinished {
            client,
            host,
            status,
            error,
            protection_gap_ms,
        } => Fact::Host {
            client,
            host,
            wave: None,
            status: status.as_str(),
            error: error.as_deref(),
            protection_gap_ms: protection_gap_ms.map(|g| g as i64),
        },
        Event::HostNotStarted {
            client,
            host,
            reason,
        } => Fact::Host {
            client,
            host,
            wave: None,
            status: "not_started",
            error: Some(reason),
            protection_gap_ms: None,
        },
        // A host whose reboot waits (`reboot: window | ask`) says so, with
        // why, until the reboot starts.
        Event::RebootWaiting {
            client,
            host,
            reason,
            ..
        } => Fact::Host {
            client,
            host,
            wave: None,
            status: "waiting_for_reboot",
            error: Some(reason),
            protection_gap_ms: None,
        },
        Event::Rebooting { client, host, .. } => Fact::Host {
            client,
            host,
            wave: None,
            status: "running",
            error: None,
            protection_gap_ms: None,
        },
        Event::StepFinished { host, step, .. } => Fact::Step {
            host,
            index: step.index as i64,
            phase: &step.phase,
            name: &step.name,
            status: name_of(&step.status),
            exit_code: step.exit_code,
            attempts: i64::from(step.attempts),
            duration_ms: step.duration_ms as i64,
            detail: step.detail.as_deref(),
            stdout: step.stdout.as_deref(),
            stderr: step.stderr.as_deref(),
        },
        Event::RollbackStepFinished { host, step, .. } => Fact::Rollback {
            host,
            name: &step.name,
            status: name_of(&step.status),
            exit_code: step.exit_code,
            detail: step.detail.as_deref(),
        },
        Event::RunResumed { .. } => Fact::Reopened,
        Event::RunFinished {
            status,
            finished_at,
        } => Fact::Finished {
            finished_at,
            status: name_of(status),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{HostStatus, RunStatus};

    #[test]
    fn the_kind_is_the_events_tag_as_stored() {
        let events = [
            Event::Interrupting,
            Event::HostFinished {
                client: "c".into(),
                host: "h".into(),
                status: HostStatus::Failed,
                error: Some("exited with 1 \"quoted\"".into()),
                protection_gap_ms: None,
            },
            Event::RunFinished {
                status: RunStatus::Halted,
                finished_at: "t".into(),
            },
        ];
        for (event, kind) in events
            .iter()
            .zip(["interrupting", "host_finished", "run_finished"])
        {
            let data = serde_json::to_string(event).unwrap();
            assert_eq!(kind_of(event, &data), kind);
        }
        // Stored in another shape: read from the event itself.
        assert_eq!(kind_of(&events[0], "{}"), "interrupting");
    }
}
