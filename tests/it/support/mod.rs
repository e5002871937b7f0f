//! Helpers shared by integration tests (`mod support;` in a test file).

pub mod sshd;

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
