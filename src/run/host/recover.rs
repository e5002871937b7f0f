//! After a connection broke in the middle of a step: reconnect, make sure
//! the step is not still running on the host, then roll back.
//!
//! sshd does not kill a command when its connection drops (no tty, no
//! SIGHUP), so the step that was cut off goes on: an uninstall would finish
//! *after* the rollback reinstalled the product. So the fresh session first
//! kills what the lost one left running (and removes its half-written
//! uploads); only a host where that is shown done gets a plain rollback.
//! One that cannot be reached again is `unreachable`; one where the step
//! cannot be shown stopped is rolled back anyway (for what protection that
//! restores) but ends `rollback_failed`: either way, a person must check it.

use serde_json::{Map, Value};

use super::context::{Gap, HostRun, connect};
use super::rollback::{roll_back, roll_back_as};
use crate::plan::PlannedStep;
use crate::run::events::HostStatus;
use crate::transport::{Connectors, Session};

/// The step whose connection broke, and what it leaves to undo.
pub(super) struct LostStep<'a, 'b> {
    /// The session that lost its connection (it knows what it left running).
    pub session: &'a dyn Session,
    /// The steps done so far, the lost one last.
    pub to_undo: &'a [&'b PlannedStep],
    /// Why the host failed, for the record.
    pub error: String,
}

pub(super) async fn reconnect_and_roll_back(
    run: &HostRun<'_>,
    lost: LostStep<'_, '_>,
    connectors: &Connectors,
    vars: &mut Map<String, Value>,
    gap: Gap,
) -> HostStatus {
    let error = lost.error;
    let leftovers = lost.session.leftovers();
    let fresh = match connect(run.host, connectors).await {
        Ok(fresh) => fresh,
        Err(e) => {
            return run.finish(
                HostStatus::Unreachable,
                Some(format!(
                    "{error}; could not reconnect to roll back ({e}): a person must check this host"
                )),
                gap.end(),
            );
        }
    };
    let status = match fresh.clean_up(&leftovers).await {
        Ok(()) => roll_back(run, fresh.as_ref(), lost.to_undo, vars, error, gap).await,
        Err(e) => {
            let reason = format!(
                "{error}; after reconnecting, the step could not be shown stopped ({e}), so it \
                 may still be running: a person must check this host"
            );
            roll_back_as(run, fresh.as_ref(), lost.to_undo, vars, reason, gap, true).await
        }
    };
    fresh.close().await;
    status
}
