//! Trying a connection again when the endpoint turned it away.
//!
//! A default sshd (`MaxStartups 10:30:100`) drops new connections at random
//! once ten are unauthenticated, by closing them before its banner; a host
//! that is restarting refuses or resets them. At `--forks 300` that turned
//! two thirds of a fleet `unreachable` in one go. These refusals say "not
//! now", not "not here": they are retried with jittered exponential backoff
//! (full jitter, so hundreds of forks do not come back in step) for as long
//! as the host's connect timeout allows, and the final error says how often
//! the host turned us away. Anything else (a wrong host key, a failed login,
//! a timeout) is final at once.

use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::Duration;

use crate::transport::TransportError;

/// The first pause before trying again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Why one attempt failed, and whether it is worth another.
pub struct Failure {
    pub error: TransportError,
    /// `Some(reason)`: the endpoint turned the connection away (refused,
    /// reset, closed before or during the handshake); try again.
    pub turned_away: Option<String>,
}

impl Failure {
    pub fn turned_away(error: TransportError, reason: impl std::fmt::Display) -> Failure {
        Failure {
            error,
            turned_away: Some(reason.to_string()),
        }
    }
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Failure {
        Failure {
            error,
            turned_away: None,
        }
    }
}

impl From<Failure> for TransportError {
    fn from(failure: Failure) -> TransportError {
        failure.error
    }
}

/// A TCP connect error that means "not now": refused or reset.
pub fn io_turned_away(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe
    )
}

/// A handshake error that means the server closed or reset the connection
/// before or during key exchange (sshd past `MaxStartups` closes without a
/// banner; russh reads that as `Disconnect`).
pub fn handshake_turned_away(e: &russh::Error) -> bool {
    match e {
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(io) => io_turned_away(io),
        _ => false,
    }
}

/// How often a host turned us away, and the last reason, for the final error.
#[derive(Default)]
pub struct Tally(Mutex<(u32, String)>);

impl Tally {
    pub fn record(&self, reason: &str) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tally.0 += 1;
        tally.1 = reason.to_string();
    }

    /// `refused 4 times (last: ...)`, or `None` if it never was.
    pub fn summary(&self) -> Option<String> {
        let tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (tally.0 > 0).then(|| {
            let times = if tally.0 == 1 { "once" } else { "times" };
            let count = if tally.0 == 1 {
                String::new()
            } else {
                format!("{} ", tally.0)
            };
            format!("refused {count}{times} (last: {})", tally.1)
        })
    }
}

/// Jittered exponential pauses: each a random length up to a ceiling that
/// doubles from [`FIRST_PAUSE`] to [`LONGEST_PAUSE`].
pub struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            ceiling: FIRST_PAUSE,
        }
    }
}

impl Backoff {
    pub fn next_pause(&mut self) -> Duration {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS: enough randomness to
        // spread forks apart, without a dependency for it.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.ceiling.as_nanos() as u64);
        let fraction = (hasher.finish() % 1000) as u32;
        let pause = (self.ceiling * fraction / 1000).max(Duration::from_millis(5));
        self.ceiling = (self.ceiling * 2).min(LONGEST_PAUSE);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_but_stay_under_the_ceiling() {
        let mut backoff = Backoff::default();
        for round in 0..12 {
            let ceiling = (FIRST_PAUSE * 2u32.pow(round)).min(LONGEST_PAUSE);
            assert!(backoff.next_pause() <= ceiling);
        }
    }

    #[test]
    fn the_summary_counts_refusals() {
        let tally = Tally::default();
        assert_eq!(tally.summary(), None);
        tally.record("connection refused");
        assert_eq!(
            tally.summary().unwrap(),
            "refused once (last: connection refused)"
        );
        for _ in 0..3 {
            tally.record("Disconnected");
        }
        assert_eq!(
            tally.summary().unwrap(),
            "refused 4 times (last: Disconnected)"
        );
    }
}
