//! An action's time limit, and uploads that keep to it.
//!
//! A step's `timeout` bounds its whole action, so one deadline is taken
//! when the action starts and every part of it gets what is left: a
//! `script:` step's upload and then its run, a `become` upload's transfer
//! and then its move into place. Commands are bounded by the transport
//! (it kills them at their timeout and keeps their output); an upload has
//! no such limit in the transport, so it is cut here, and what it had
//! written is removed: a cut upload never leaves a partial file. Uploads
//! are written beside their destination and renamed over it once whole,
//! so the destination itself holds its old copy or the whole new one.

use std::time::{Duration, Instant};

use crate::transport::{Os, Session, TransportError, UploadSource, atomic_upload};

/// How long removing a cut upload's partial copy may take. The link that
/// made the upload slow may be slow for this too; past this the partial
/// copy is reported left on the host.
const REMOVE_PARTIAL_LIMIT: Duration = Duration::from_secs(30);

/// When an action's time is up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline(Option<Instant>);

impl Deadline {
    /// `limit` from now (`None`: never).
    pub(super) fn after(limit: Option<Duration>) -> Deadline {
        Deadline(limit.map(|l| Instant::now() + l))
    }

    /// The time left, for a command's own timeout (`None`: no limit).
    pub(super) fn left(&self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    pub(super) fn passed(&self) -> bool {
        self.left().is_some_and(|left| left.is_zero())
    }
}

/// Where an upload writes before its file is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// Beside the destination, renamed over it once checked (every upload
    /// to a path the playbook names): a cut leaves the destination as it
    /// was. The host's OS says how the copy beside it is named.
    Beside(Os),
    /// At the path itself: one of the session's fresh temporary paths (a
    /// script, a `become` upload's staging copy), which holds nothing else.
    InPlace,
}

/// How an upload within a deadline ended.
pub(super) enum Sent {
    Whole,
    /// Cut off at the deadline; says what became of what it had written.
    Cut(String),
}

/// Uploads `source` to `dest` unless `deadline` passes first; then the
/// transfer is dropped (its SFTP session closes with it) and its partial
/// copy removed.
pub(super) async fn upload_within(
    session: &dyn Session,
    source: &UploadSource,
    dest: &str,
    mode: u32,
    written: Written,
    deadline: Deadline,
) -> Result<Sent, TransportError> {
    let upload = session.upload(source, dest, mode);
    let Some(left) = deadline.left() else {
        upload.await?;
        return Ok(Sent::Whole);
    };
    match tokio::time::timeout(left, upload).await {
        Ok(done) => done.map(|()| Sent::Whole),
        Err(_) => Ok(Sent::Cut(remove_partial(session, dest, written).await)),
    }
}

/// Removes what a cut upload to `dest` wrote, and says how that went.
async fn remove_partial(session: &dyn Session, dest: &str, written: Written) -> String {
    let partial = match written {
        Written::InPlace => vec![dest.to_string()],
        // The transport keeps the names of its unfinished copies (for a
        // lost connection's clean-up); this upload's is among them.
        Written::Beside(os) => {
            let beside = atomic_upload::temp_beside(os, dest, "");
            let prefix = beside.trim_end_matches(".tmp");
            let mut files = session.leftovers().files;
            files.retain(|f| f.starts_with(prefix));
            files
        }
    };
    let removal = async {
        let mut failed = Vec::new();
        for file in &partial {
            if let Err(e) = session.remove(file).await {
                failed.push(format!("{file} ({e})"));
            }
        }
        failed
    };
    let kept = match written {
        Written::Beside(_) => format!(", and {dest} was left as it was"),
        Written::InPlace => String::new(),
    };
    if partial.is_empty() {
        // Cut before the transport started a copy (or one that keeps no
        // names): nothing known to remove.
        return format!("the upload was cut off{kept}");
    }
    match tokio::time::timeout(REMOVE_PARTIAL_LIMIT, removal).await {
        Ok(failed) if failed.is_empty() => {
            format!("the upload was cut off, its partial copy removed{kept}")
        }
        Ok(failed) => format!(
            "the upload was cut off{kept}; its partial copy could not be removed: {}",
            failed.join(", ")
        ),
        Err(_) => format!(
            "the upload was cut off{kept}; removing its partial copy took over {}s, so it \
             may be left on the host",
            REMOVE_PARTIAL_LIMIT.as_secs()
        ),
    }
}
