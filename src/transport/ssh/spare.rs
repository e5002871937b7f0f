//! A session channel opened ahead of the step that will use it.
//!
//! Opening a channel costs a round trip, and it cannot be pipelined with
//! the exec request: the server picks its own number for the channel in
//! its confirmation, and every later request on the channel is addressed by
//! that number (RFC 4254 5.1, 5.4), so nothing can be sent on a channel
//! before its confirmation has come back. What can be done is to open it
//! early: a host's steps run one after another, so while one step runs, the
//! channel of the next is opened. Over a WAN link that takes one of a
//! step's two round trips (open, then exec to exit status) off the host's
//! critical path; the measurements are in BENCHMARKS.md.
//!
//! At most one channel is kept ahead per connection, and only on the
//! connection it was opened on (a reconnect leaves it with the dead one).
//! A host whose sshd refuses it (`MaxSessions` reached while the step runs)
//! simply has none: the step after opens its own, as without this. And a
//! channel kept ahead gives its place up when another is refused (an SFTP
//! session under `MaxSessions 1`, see [`Spare::release`]).

use std::sync::{Arc, Mutex};

use russh::Channel;
use russh::client::Msg;
use tokio::task::JoinHandle;

use super::Live;

/// A channel on its way (or come: `None` if the host refused it), and the
/// connection it is for.
type Opening = (Arc<Live>, JoinHandle<Option<Channel<Msg>>>);

/// The channel being opened (or opened) ahead.
#[derive(Default)]
pub(super) struct Spare {
    slot: Mutex<Option<Opening>>,
}

impl Spare {
    /// The channel opened ahead on `live`, waiting for it if it is still
    /// on its way (it left before anything else would have); `None`: there
    /// is none, or the host refused it.
    pub(super) async fn take(&self, live: &Arc<Live>) -> Option<Channel<Msg>> {
        let (opened_on, opening) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        if !Arc::ptr_eq(&opened_on, live) {
            // Opened on a connection since replaced: it went with it.
            opening.abort();
            return None;
        }
        opening.await.ok().flatten()
    }

    /// Starts opening a channel on `live` for the next step, unless one is
    /// kept or on its way already.
    pub(super) fn prepare(&self, live: &Arc<Live>) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() && !live.handle.is_closed() {
            let opener = live.clone();
            let opening =
                tokio::spawn(async move { opener.handle.channel_open_session().await.ok() });
            *slot = Some((live.clone(), opening));
        }
    }

    /// Closes the channel kept ahead, if any, to free its place on a host
    /// that refused another (waiting for it if it is on its way: a channel
    /// confirmed after being given up would hold the place unseen).
    pub(super) async fn release(&self) {
        let kept = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((_, opening)) = kept
            && let Ok(Some(channel)) = opening.await
        {
            let _ = channel.close().await;
        }
    }
}
