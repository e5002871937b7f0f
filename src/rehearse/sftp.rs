//! The `sftp` subsystem of a simulated endpoint, so `upload:` and
//! `script:` steps rehearse over the same SFTP requests as against a real
//! host (russh-sftp's server side, on the session channel that asked).
//!
//! Nothing is stored: what is written is hashed and dropped as it arrives,
//! into the host's [`HostFiles`] (path, size, SHA-256), which is all the
//! transport's later check of the copy and the host's answers need.
//!
//! The requests the SSH transport sends are answered as OpenSSH's
//! `sftp-server` answers them (its `errno_to_portable` in sftp-server.c
//! maps ENOENT to `NoSuchFile` and EEXIST, ENOSPC and the rest to a bare
//! `Failure`): an exclusive open of a new path (refused
//! with `Failure` when the path is taken), writes, close, `setstat` of the
//! mode, `stat`, `remove` (`NoSuchFile` when there is nothing to remove)
//! and `rename` (refused with `Failure` when the new path is taken, as
//! SFTP version 3 renames are). What needs the contents (reading), or
//! folders the simulator does not track, gets `OpUnsupported`, never a
//! success that did nothing. A `disk_full` fault fails writes with the
//! bare `Failure` a full disk gives.

use std::collections::HashMap;
use std::sync::Arc;

use russh::Channel;
use russh::server::Msg;
use russh_sftp::protocol::{Attrs, FileAttributes, Handle, OpenFlags, Status, StatusCode};
use russh_sftp::server::StatusReply;

use super::endpoint::Fleet;
use super::files::{self, NotCreated};

/// Files one SFTP session may hold open at once (the transport holds one).
const MAX_OPEN: usize = 64;

/// Serves SFTP for host `index` of `fleet` on `channel` until the client
/// closes it or the connection ends.
pub fn serve(fleet: Arc<Fleet>, index: usize, channel: Channel<Msg>) {
    let session = Session {
        fleet,
        index,
        open: HashMap::new(),
        handles: 0,
    };
    // The contents of a write arrive whole in one packet: at most the
    // client's packet size (32 KiB for the transport), under this limit.
    let config = russh_sftp::server::Config::default();
    tokio::spawn(russh_sftp::server::run_with_config(
        channel.into_stream(),
        session,
        config,
    ));
}

/// One SFTP session with one simulated host.
struct Session {
    fleet: Arc<Fleet>,
    index: usize,
    /// Handle → the file it writes.
    open: HashMap<String, OpenFile>,
    handles: u64,
}

struct OpenFile {
    key: String,
    generation: u64,
    append: bool,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

fn failure(code: StatusCode) -> StatusReply {
    StatusReply::new(code)
}

impl Session {
    fn key(&self, path: &str) -> String {
        files::key(self.fleet.endpoints[self.index].os, path)
    }

    /// Runs `f` on this host's files, under the host's lock.
    fn files<T>(&self, f: impl FnOnce(&mut files::HostFiles) -> T) -> T {
        let mut state = self.fleet.endpoints[self.index]
            .state
            .lock()
            .expect("host state");
        f(&mut state.files)
    }

    fn attrs_of(&self, key: &str) -> Result<FileAttributes, StatusReply> {
        let size = self
            .files(|files| files.size(key))
            .ok_or(failure(StatusCode::NoSuchFile))?;
        Ok(FileAttributes {
            size: Some(size),
            // A regular file; its mode is not kept.
            permissions: Some(0o100644),
            ..Default::default()
        })
    }
}

impl russh_sftp::server::Handler for Session {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        failure(StatusCode::OpUnsupported)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let key = self.key(&filename);
        if !pflags.contains(OpenFlags::WRITE) {
            // Reading needs the contents, which are never kept.
            return Err(match self.files(|files| files.exists(&key)) {
                true => failure(StatusCode::OpUnsupported)
                    .with_message("a simulated host keeps no contents to read"),
                false => failure(StatusCode::NoSuchFile),
            });
        }
        if self.open.len() >= MAX_OPEN {
            return Err(failure(StatusCode::Failure));
        }
        let generation = if pflags.contains(OpenFlags::CREATE) {
            let (exclusive, truncate) = (
                pflags.contains(OpenFlags::EXCLUDE),
                pflags.contains(OpenFlags::TRUNCATE),
            );
            self.files(|files| files.create(&key, exclusive, truncate))
                .map_err(|why| match why {
                    // What OpenSSH sends for EEXIST: no SFTP code has it.
                    NotCreated::Exists => failure(StatusCode::Failure),
                    NotCreated::TooMany => failure(StatusCode::Failure).with_message(format!(
                        "a simulated host keeps at most {} files",
                        files::MAX_FILES
                    )),
                })?
        } else {
            self.files(|files| files.generation(&key))
                .ok_or(failure(StatusCode::NoSuchFile))?
        };
        self.handles += 1;
        let handle = self.handles.to_string();
        self.open.insert(
            handle.clone(),
            OpenFile {
                key,
                generation,
                append: pflags.contains(OpenFlags::APPEND),
            },
        );
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.open.get(&handle).ok_or(failure(StatusCode::Failure))?;
        if self.fleet.disk_full(self.index) {
            return Err(failure(StatusCode::Failure));
        }
        let at = (!file.append).then_some(offset);
        self.files(|files| files.write(&file.key, file.generation, at, &data));
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.open.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(failure(StatusCode::Failure)),
        }
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let key = self.key(&path);
        self.attrs_of(&key).map(|_| ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.open.contains_key(&handle) {
            true => Ok(ok(id)),
            false => Err(failure(StatusCode::Failure)),
        }
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let key = self.key(&path);
        Ok(Attrs {
            id,
            attrs: self.attrs_of(&key)?,
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let key = self
            .open
            .get(&handle)
            .map(|f| f.key.clone())
            .ok_or(failure(StatusCode::Failure))?;
        Ok(Attrs {
            id,
            attrs: self.attrs_of(&key)?,
        })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let key = self.key(&filename);
        match self.files(|files| files.remove(&key)) {
            true => Ok(ok(id)),
            false => Err(failure(StatusCode::NoSuchFile)),
        }
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.key(&oldpath), self.key(&newpath));
        self.files(|files| {
            if !files.exists(&from) {
                Err(failure(StatusCode::NoSuchFile))
            } else if files.exists(&to) {
                Err(failure(StatusCode::Failure))
            } else {
                files.rename(&from, &to);
                Ok(ok(id))
            }
        })
    }
}
