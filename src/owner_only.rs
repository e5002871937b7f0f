//! Files and folders only their owner can read.
//!
//! The journal, the reports and the logs hold what endpoints printed
//! (paths, user names, product versions, sometimes more than a playbook
//! author expected), so under the usual umask 022 they would be readable by
//! every user of the controller. Everything this tool creates is made 0600
//! (folders 0700) at creation, whatever the umask: setting the mode in the
//! `open(2)` call itself leaves no moment where the file is readable by
//! others. Files that already exist keep their mode: the operator may have
//! chosen it (or the path is a device such as `/dev/stdout`).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The mode of files this tool creates.
pub const FILE_MODE: u32 = 0o600;
/// The mode of folders this tool creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents, each 0700.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Opens `path` for writing from the start (created 0600 if missing).
pub fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Opens `path` for appending (created 0600 if missing).
pub fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Makes sure `path` exists, created 0600 if missing, without touching
/// its contents (SQLite then opens it; its `-wal` and `-shm` files take
/// the mode of the database file).
pub fn touch(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
}
