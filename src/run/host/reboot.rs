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
//! Once the policy lets the reboot happen, the host is asked who is logged
//! on ([`super::logged_on`]): `ask` names them in its question,
//! `reboot_with_users` may ask or refuse because of them, and they go with
//! the `rebooting` event whatever the policy (the journal and the report
//! keep it), so that "who was cut off" can be answered after the run.
//!
//! Apart from [`super::perform`] and [`super::attempt`], the two places
//! that reboot, so that both apply the same policy; it reads only the
//! host's context and asks the host only who is logged on.

use super::context::HostRun;
use super::logged_on::{LoggedOn, logged_on};
use crate::load::{RebootPolicy, RebootWithUsers, WindowState};
use crate::run::events::{Event, timestamp};
use crate::transport::{Os, Session};

/// Decides whether the host may reboot now and, if it may, says so with
/// the `rebooting` event; `Err(why)` if it must not (nothing rebooted).
pub(super) async fn permit(
    run: &HostRun<'_>,
    session: &dyn Session,
    step: &str,
) -> Result<(), String> {
    wait_for_policy(run, step).await?;
    let users = logged_on(session, run.host.os == Os::Windows).await;
    let why = format!("step `{step}` asks for a reboot; {}", users.describe());
    let ask = matches!(run.host.reboot, RebootPolicy::Ask)
        || (users.maybe_someone() && run.host.reboot_with_users == RebootWithUsers::Ask);
    if users.maybe_someone() && run.host.reboot_with_users == RebootWithUsers::Refuse {
        return Err(format!(
            "{}; the host was not rebooted (reboot_with_users: refuse)",
            users.describe()
        ));
    }
    if ask {
        let rule = match run.host.reboot {
            RebootPolicy::Ask => "reboot: ask",
            _ => "reboot_with_users: ask",
        };
        waiting(
            run,
            format!("{why}; it waits for the operator's answer ({rule})"),
            None,
        );
        let client = run.client();
        tokio::select! {
            answer = run.confirm.confirm_reboot(&client, &run.host.name, &why) => answer?,
            _ = run.stop.cancelled() => return Err(
                "the run was interrupted while the reboot waited for an answer; the host was not rebooted".into()
            ),
        }
    }
    let (logged_on, logged_on_unknown) = match users {
        LoggedOn::Users(users) => (users, None),
        LoggedOn::Unknown(why) => (Vec::new(), Some(why)),
    };
    run.events.emit(Event::Rebooting {
        client: run.client(),
        host: run.host.name.clone(),
        step: step.to_string(),
        logged_on,
        logged_on_unknown,
    });
    Ok(())
}

/// `Ok(())` once the policy (`now`, `window`) lets the reboot happen;
/// `ask` is asked by [`permit`], with who is logged on.
async fn wait_for_policy(run: &HostRun<'_>, step: &str) -> Result<(), String> {
    match &run.host.reboot {
        RebootPolicy::Now | RebootPolicy::Ask => Ok(()),
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
