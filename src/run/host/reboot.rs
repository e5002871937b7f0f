//! Whether a host may reboot now, by its reboot policy (`reboot: now |
//! window | ask` in the inventory), before a `reboot:` step or a
//! `reboot_codes` exit reboots it.
//!
//! `window` waits for the host's maintenance window to open, and `ask`
//! for the operator's answer; either way the host keeps its place in its
//! wave (its permits are held) and the wait is an event (`reboot_waiting`)
//! that the progress, the live lines and the journal show. Both end at the
//! first Ctrl-C/SIGTERM, like a `wait:` step: the step then fails and the
//! host is rolled back, as any host caught half-way. A refusal (no, or no
//! terminal to ask) fails the step the same way, with nothing rebooted.
//!
//! Apart from [`super::perform`] and [`super::attempt`], the two places
//! that reboot, so that both apply the same policy; it reads only the
//! host's context.

use super::context::HostRun;
use crate::load::{RebootPolicy, WindowState};
use crate::run::events::{Event, timestamp};

/// `Ok(())` once the host may reboot; `Err(why)` if it must not.
pub(super) async fn permit(run: &HostRun<'_>, step: &str) -> Result<(), String> {
    match &run.host.reboot {
        RebootPolicy::Now => Ok(()),
        RebootPolicy::Window(window) => {
            let mut said = false;
            loop {
                let opens = match window.at(run.clock.now()) {
                    WindowState::Open { .. } => return Ok(()),
                    WindowState::Opens(at) => at,
                };
                if !said {
                    said = true;
                    waiting(
                        run,
                        format!(
                            "step `{step}` asks for a reboot; it waits for the reboot window ({}), which opens at {}",
                            window.describe(),
                            timestamp(opens)
                        ),
                        Some(timestamp(opens)),
                    );
                }
                tokio::select! {
                    _ = run.clock.sleep_until(opens) => {}
                    _ = run.stop.cancelled() => return Err(
                        "the wait for the reboot window was cut short: the run was interrupted; the host was not rebooted".into()
                    ),
                }
            }
        }
        RebootPolicy::Ask => {
            let why = format!("step `{step}` asks for a reboot");
            waiting(
                run,
                format!("{why}; it waits for the operator's answer (reboot: ask)"),
                None,
            );
            let client = run.client();
            tokio::select! {
                answer = run.confirm.confirm_reboot(&client, &run.host.name, &why) => answer,
                _ = run.stop.cancelled() => Err(
                    "the run was interrupted while the reboot waited for an answer; the host was not rebooted".into()
                ),
            }
        }
    }
}

fn waiting(run: &HostRun<'_>, reason: String, until: Option<String>) {
    run.events.emit(Event::RebootWaiting {
        client: run.client(),
        host: run.host.name.clone(),
        reason,
        until,
    });
}
