//! Helpers shared by integration tests (`mod support;` in a test file).
#![allow(dead_code)]

pub mod postgres;
pub mod proxy;
pub mod sshd;
pub mod terminal;

/// A file holding some bytes, ready to upload (its folder goes with it).
pub struct TempSource {
    _dir: tempfile::TempDir,
    source: orchestrate::transport::UploadSource,
}

impl std::ops::Deref for TempSource {
    type Target = orchestrate::transport::UploadSource;
    fn deref(&self) -> &Self::Target {
        &self.source
    }
}

/// `contents` in a file of its own, as an upload's source.
pub fn upload_source(contents: &[u8]) -> TempSource {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, contents).expect("write the upload source");
    let source = orchestrate::transport::UploadSource::hash(&path).expect("hash it");
    TempSource { _dir: dir, source }
}

/// Waits for `child` with `wait4`: its exit status and its resource usage
/// (peak RSS in `ru_maxrss`, KiB), the child's alone.
pub fn wait_measured(child: std::process::Child) -> (std::process::ExitStatus, libc::rusage) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    (std::process::ExitStatus::from_raw(status), usage)
}
