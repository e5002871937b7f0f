//! The host's context: who the host is, its plan, the events it reports
//! to, the redactor, the stop signal, and how long it has gone without
//! protection.
//!
//! The bottom of the host's modules: it depends on none of them, and
//! [`super::perform`], [`super::attempt`], [`super::rollback`] and the
//! host's run ([`super`]) all read it. Keeping what they share here, and
//! nothing that acts, is what lets those files depend one way.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::plan::{HostPlan, LiveRedactor, Plan};
use crate::run::events::{Event, Events, HostStatus};
use crate::transport::{Connectors, Session, TransportError};

/// Everything one host's run reads, lent by the scheduler.
pub(crate) struct HostRun<'a> {
    pub plan: &'a Plan,
    pub host: &'a HostPlan,
    pub events: &'a Events,
    pub redactor: &'a LiveRedactor,
    /// The first Ctrl-C: start no further step.
    pub stop: &'a CancellationToken,
    /// `--check`: run only check_safe steps; say what the others would do.
    pub check: bool,
    /// Resuming a host caught mid-way: what it had completed.
    pub resume: Option<crate::run::Carried>,
    /// Asks the operator (`reboot: ask`).
    pub confirm: &'a dyn crate::run::Confirm,
    /// The time of day (`reboot: window`).
    pub clock: crate::run::Clock,
}

impl HostRun<'_> {
    pub(super) fn client(&self) -> String {
        self.host.client.clone()
    }

    pub(super) fn finish(
        &self,
        status: HostStatus,
        error: Option<String>,
        gap: Option<Duration>,
    ) -> HostStatus {
        self.events.emit(Event::HostFinished {
            client: self.client(),
            host: self.host.name.clone(),
            status,
            error: error.map(|e| self.redactor.redact(&e)),
            protection_gap_ms: gap.map(|g| g.as_millis() as u64),
        });
        status
    }
}

/// Tracks how long the endpoint went without protection, from the steps
/// marked `protection_off` / `protection_on`.
#[derive(Default)]
pub(super) struct Gap {
    since: Option<Instant>,
    total: Option<Duration>,
}

impl Gap {
    pub(super) fn off(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }
    pub(super) fn on(&mut self) {
        if let Some(since) = self.since.take() {
            *self.total.get_or_insert(Duration::ZERO) += since.elapsed();
        }
    }
    pub(super) fn end(mut self) -> Option<Duration> {
        self.on();
        self.total
    }
}

/// Opens a session to the host (also to reconnect after a lost connection).
pub(super) async fn connect(
    host: &HostPlan,
    connectors: &Connectors,
) -> Result<Box<dyn Session>, TransportError> {
    let connector = connectors.for_kind(host.target.kind)?;
    // The transports bound their own handshakes; this is the backstop
    // that keeps one silent host from holding a fork forever.
    let limit = host.target.connect_timeout * 2 + Duration::from_secs(5);
    match tokio::time::timeout(limit, connector.connect(&host.target)).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Unreachable(format!(
            "host {}: no connection after {}s",
            host.name,
            limit.as_secs()
        ))),
    }
}
