//! The reboot policy of a host: `reboot: now | window | ask`, and the
//! maintenance window `reboot_window` that `window` waits for, as the
//! inventory writes them (defaults, client, host; the nearest wins, the
//! window as a whole), and when that window is open.
//!
//! Domain controllers, RDS hosts and database servers must not reboot in
//! the middle of the working day, so the MSP says per client or per host
//! when a reboot a step asks for (a `reboot:` step, a `reboot_codes` exit)
//! may happen. The window is a weekly one, in a named time zone, because
//! that is how MSPs agree maintenance windows with their clients ("Saturday
//! and Sunday, 22:00 to 04:00 New York time"); a window whose end is not
//! after its start runs past midnight into the next day.
//!
//! The time arithmetic is pure (it is given "now"), so that tests can ask
//! any moment of the week without waiting for it.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use schemars::JsonSchema;
use serde::Deserialize;

/// `reboot:` as the inventory writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RebootKind {
    /// Reboot as soon as a step asks (the default).
    #[default]
    Now,
    /// Wait for `reboot_window` to open; the host keeps its place in its wave.
    Window,
    /// Ask the operator on the terminal (`--yes` answers yes); without a
    /// terminal the host is not rebooted, and its step fails.
    Ask,
}

/// `reboot_with_users:`: what a reboot does when people are logged on to
/// the host (Windows `quser`, POSIX `who`, asked right before the reboot,
/// once `reboot:` lets it happen). Like Windows Update's "no auto-restart
/// with logged on users" policy: the MSP decides per client or host
/// whether a session in use may be cut. Whoever is logged on is recorded
/// with the reboot (the `rebooting` event, the journal, the report) and
/// named in any question, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RebootWithUsers {
    /// Reboot anyway (the default); who was logged on is recorded.
    #[default]
    Reboot,
    /// Ask the operator first, naming who is logged on (`--yes` answers
    /// yes; without a terminal, no).
    Ask,
    /// Do not reboot: the step fails and the host is rolled back. Also
    /// when who is logged on cannot be told.
    Refuse,
}

impl RebootWithUsers {
    pub fn as_str(self) -> &'static str {
        match self {
            RebootWithUsers::Reboot => "reboot",
            RebootWithUsers::Ask => "ask",
            RebootWithUsers::Refuse => "refuse",
        }
    }
}

/// A host's resolved policy, as the runner applies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RebootPolicy {
    #[default]
    Now,
    Window(RebootWindow),
    Ask,
}

impl RebootPolicy {
    /// `now`, `ask`, or `window` and when it is: for the dry run.
    pub fn describe(&self) -> String {
        match self {
            RebootPolicy::Now => "now".into(),
            RebootPolicy::Ask => "ask".into(),
            RebootPolicy::Window(w) => format!("window {}", w.describe()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RebootPolicy::Now => "now",
            RebootPolicy::Window(_) => "window",
            RebootPolicy::Ask => "ask",
        }
    }
}

/// A day of the week as the inventory writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Mon,
            Day::Tue => Weekday::Tue,
            Day::Wed => Weekday::Wed,
            Day::Thu => Weekday::Thu,
            Day::Fri => Weekday::Fri,
            Day::Sat => Weekday::Sat,
            Day::Sun => Weekday::Sun,
        }
    }
}

/// `reboot_window:` as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RebootWindowDoc {
    /// The days the window opens on. Default: every day.
    #[serde(default)]
    days: Option<Vec<Day>>,
    /// When it opens, `HH:MM`.
    start: String,
    /// When it closes, `HH:MM`; not after `start`: the next day.
    end: String,
    /// An IANA time zone (`America/New_York`, `Europe/Berlin`, `UTC`).
    /// Default: the controller's own.
    #[serde(default)]
    tz: Option<String>,
}

/// A weekly maintenance window, checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RebootWindowDoc")]
pub struct RebootWindow {
    days: Vec<Weekday>,
    start: NaiveTime,
    /// How long it stays open.
    length: Duration,
    zone: Zone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// The controller's time zone.
    Local,
    Named(chrono_tz::Tz),
}

impl TryFrom<RebootWindowDoc> for RebootWindow {
    type Error = String;

    fn try_from(doc: RebootWindowDoc) -> Result<Self, String> {
        let time = |what: &str, text: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
                format!("reboot_window {what} `{text}` is not a time of day; write it as \"22:00\"")
            })
        };
        let start = time("start", &doc.start)?;
        let end = time("end", &doc.end)?;
        if start == end {
            return Err(format!(
                "reboot_window opens and closes at {}: it would never be open; give it a length",
                doc.start.trim()
            ));
        }
        let length = if end > start {
            end - start
        } else {
            Duration::days(1) - (start - end)
        };
        let zone = match doc.tz.as_deref().map(str::trim) {
            None => Zone::Local,
            Some(name) => Zone::Named(name.parse().map_err(|_| {
                format!(
                    "reboot_window tz `{name}` is not a time zone; write an IANA name such as America/New_York or UTC"
                )
            })?),
        };
        let mut days: Vec<Weekday> = match doc.days {
            Some(days) if days.is_empty() => {
                return Err("reboot_window has no days; list them (days: [sat, sun]) or leave `days` out for every day".into());
            }
            Some(days) => days.into_iter().map(Day::weekday).collect(),
            None => [
                Day::Mon,
                Day::Tue,
                Day::Wed,
                Day::Thu,
                Day::Fri,
                Day::Sat,
                Day::Sun,
            ]
            .into_iter()
            .map(Day::weekday)
            .collect(),
        };
        days.sort_by_key(|d| d.num_days_from_monday());
        days.dedup();
        Ok(RebootWindow {
            days,
            start,
            length,
            zone,
        })
    }
}

/// Where a window stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Open now, until then.
    Open { closes: DateTime<Utc> },
    /// Closed; it opens then.
    Opens(DateTime<Utc>),
}

impl RebootWindow {
    /// `sat,sun 22:00-04:00 America/New_York`.
    pub fn describe(&self) -> String {
        let days = if self.days.len() == 7 {
            "every day".to_string()
        } else {
            self.days
                .iter()
                .map(|d| d.to_string().to_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        };
        let end = self.start + self.length;
        let zone = match self.zone {
            Zone::Local => "controller's local time".to_string(),
            Zone::Named(tz) => tz.name().to_string(),
        };
        format!(
            "{days} {}-{} {zone}",
            self.start.format("%H:%M"),
            end.format("%H:%M")
        )
    }

    /// Whether the window is open at `now`, and if not, when it opens.
    pub fn at(&self, now: DateTime<Utc>) -> WindowState {
        let today = self.zone.date_of(now);
        // From yesterday (a window running past midnight may still be
        // open) to a week ahead: some day of the list opens in that time.
        let mut next = None;
        for offset in -1..=7 {
            let date = today + Duration::days(offset);
            if !self.days.contains(&date.weekday()) {
                continue;
            }
            let Some(opens) = self.zone.to_utc(date, self.start) else {
                continue;
            };
            let closes = opens + self.length;
            if opens <= now && now < closes {
                return WindowState::Open { closes };
            }
            if opens > now && next.is_none() {
                next = Some(opens);
            }
        }
        // Every listed day opens within the week scanned.
        WindowState::Opens(next.unwrap_or(now))
    }
}

impl Zone {
    fn date_of(self, at: DateTime<Utc>) -> NaiveDate {
        match self {
            Zone::Local => at.with_timezone(&chrono::Local).date_naive(),
            Zone::Named(tz) => at.with_timezone(&tz).date_naive(),
        }
    }

    /// The moment a wall-clock time happens on `date`; a time that a
    /// daylight-saving jump skips is taken an hour later.
    fn to_utc(self, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        fn first<Tz: TimeZone>(zone: &Tz, local: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
            zone.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    zone.from_local_datetime(&(local + Duration::hours(1)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&Utc))
        }
        let local = date.and_time(time);
        match self {
            Zone::Local => first(&chrono::Local, local),
            Zone::Named(tz) => first(&tz, local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(yaml: &str) -> Result<RebootWindow, String> {
        let doc: RebootWindowDoc = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        RebootWindow::try_from(doc)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_weekend_night_window_crossing_midnight() {
        let w = window("{ days: [sat, sun], start: '22:00', end: '04:00', tz: UTC }").unwrap();
        assert_eq!(w.describe(), "sat,sun 22:00-04:00 UTC");
        // 2026-12-05 is a Saturday.
        assert_eq!(
            w.at(utc("2026-12-05T21:59:00Z")),
            WindowState::Opens(utc("2026-12-05T22:00:00Z"))
        );
        assert_eq!(
            w.at(utc("2026-12-06T03:00:00Z")),
            WindowState::Open {
                closes: utc("2026-12-06T04:00:00Z")
            }
        );
        // Monday 03:00 is still Sunday night's window.
        assert_eq!(
            w.at(utc("2026-12-07T03:59:59Z")),
            WindowState::Open {
                closes: utc("2026-12-07T04:00:00Z")
            }
        );
        // Monday noon: next Saturday.
        assert_eq!(
            w.at(utc("2026-12-07T12:00:00Z")),
            WindowState::Opens(utc("2026-12-12T22:00:00Z"))
        );
    }

    #[test]
    fn a_named_zone_follows_daylight_saving() {
        let w = window("{ start: '22:00', end: '23:00', tz: America/New_York }").unwrap();
        // EDT (UTC-4) in July, EST (UTC-5) in December.
        assert_eq!(
            w.at(utc("2026-07-01T12:00:00Z")),
            WindowState::Opens(utc("2026-07-02T02:00:00Z"))
        );
        assert_eq!(
            w.at(utc("2026-12-01T12:00:00Z")),
            WindowState::Opens(utc("2026-12-02T03:00:00Z"))
        );
    }

    #[test]
    fn wrong_windows_say_what_to_write() {
        assert!(
            window("{ start: '10pm', end: '04:00' }")
                .unwrap_err()
                .contains("\"22:00\"")
        );
        assert!(
            window("{ start: '22:00', end: '22:00' }")
                .unwrap_err()
                .contains("never be open")
        );
        assert!(
            window("{ start: '22:00', end: '04:00', tz: Mars/Olympus }")
                .unwrap_err()
                .contains("IANA")
        );
        assert!(
            window("{ days: [], start: '22:00', end: '04:00' }")
                .unwrap_err()
                .contains("no days")
        );
    }
}
