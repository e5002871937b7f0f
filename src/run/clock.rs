//! The run's clock: what time it is for maintenance windows.
//!
//! A window opens at a wall-clock time, days away; tests (and rehearsals)
//! must not wait for it. So the runner reads the time of day from a
//! [`Clock`] that may be set to start at another moment and then runs at
//! the real pace: set five seconds before a window opens, it opens five
//! real seconds later. Durations (timeouts, `wait:`) are not affected.
//! `orchestrate` sets it from `ORCHESTRATE_NOW` (an RFC 3339 time), which
//! exists for tests; unset, the clock is the system's.

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Added to the system time.
    offset: TimeDelta,
}

impl Clock {
    /// A clock that reads `at` now and runs on from there.
    pub fn starting_at(at: DateTime<Utc>) -> Clock {
        Clock {
            offset: at - Utc::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Sleeps until this clock reads `at` (at once if it already has).
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        let left = (at - self.now()).to_std().unwrap_or_default();
        tokio::time::sleep(left).await;
    }
}
