//! A file to upload, read from disk in chunks by every host that gets it.
//!
//! An installer of 200 MB sent to 50 hosts at once must not cost 50 copies
//! in memory (that is 10 GB, and a controller killed for memory rolls
//! nothing back). So a transport never gets the file's contents: it gets an
//! [`UploadSource`] (path, size, SHA-256, computed once per file and shared
//! by all hosts through [`UploadSources`]) and reads it in [`CHUNK`]-sized
//! pieces as it sends. Each host reads the file itself; the page cache makes
//! that one read from disk, and memory is one chunk per host in flight.
//!
//! A file that changes between hashing and sending would reach hosts as
//! something else than what was hashed: the size and modification time are
//! checked again when a host's copy has been read, and a change fails that
//! host's upload.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from the file at a time, per host.
pub const CHUNK: usize = 256 * 1024;

/// A local file, as hashed when first uploaded in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSource {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    sha256: [u8; 32],
    /// Contents made for one host (a script with its arguments inside, see
    /// `script_args`), sent from memory instead of from `path`.
    memory: Option<Arc<[u8]>>,
}

impl UploadSource {
    /// Reads `path` once (in chunks) to learn its size and SHA-256.
    /// Blocking: call it off the async threads (see [`UploadSources::get`]).
    pub fn hash(path: &Path) -> std::io::Result<UploadSource> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(UploadSource {
            path: path.to_path_buf(),
            len,
            modified: meta.modified().ok(),
            sha256: hasher.finalize().into(),
            memory: None,
        })
    }

    /// `contents`, made from the file at `path` for one upload, sent from memory.
    pub fn in_memory(path: &Path, contents: Vec<u8>) -> UploadSource {
        UploadSource {
            path: path.to_path_buf(),
            len: contents.len() as u64,
            modified: None,
            sha256: Sha256::digest(&contents).into(),
            memory: Some(contents.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA-256 of the contents, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Still the file that was hashed (same size and modification time)?
    fn unchanged(&self, meta: &std::fs::Metadata) -> bool {
        meta.len() == self.len && meta.modified().ok() == self.modified
    }

    /// Opens the file for one host's copy.
    pub async fn open(&self) -> std::io::Result<SourceReader> {
        let from = match &self.memory {
            Some(contents) => Origin::Memory(contents.clone()),
            None => Origin::File(tokio::fs::File::open(&self.path).await?),
        };
        Ok(SourceReader {
            source: self.clone(),
            from,
            read: 0,
            buf: vec![0u8; CHUNK],
        })
    }

    /// Sends the whole file into `sink`, a chunk at a time.
    pub async fn copy_to<W: AsyncWrite + Unpin>(&self, sink: &mut W) -> std::io::Result<()> {
        let mut reader = self.open().await?;
        while let Some(chunk) = reader.next_chunk().await? {
            sink.write_all(chunk).await?;
        }
        Ok(())
    }
}

/// One host's pass over an [`UploadSource`].
pub struct SourceReader {
    source: UploadSource,
    from: Origin,
    read: u64,
    buf: Vec<u8>,
}

/// Where a [`SourceReader`] reads.
enum Origin {
    File(tokio::fs::File),
    Memory(Arc<[u8]>),
}

impl SourceReader {
    /// The next piece of at most `max` bytes (at most [`CHUNK`]); `None` at
    /// the end, once the file is known to be the one hashed.
    pub async fn next_chunk_of(&mut self, max: usize) -> std::io::Result<Option<&[u8]>> {
        let want = max.min(CHUNK);
        let file = match &mut self.from {
            Origin::File(file) => file,
            Origin::Memory(contents) => {
                let at = self.read as usize;
                let end = (at + want).min(contents.len());
                self.read = end as u64;
                return Ok((end > at).then(|| &contents[at..end]));
            }
        };
        let mut filled = 0;
        while filled < want {
            let n = file.read(&mut self.buf[filled..want]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.read += filled as u64;
        if self.read > self.source.len {
            return Err(changed(&self.source));
        }
        if filled == 0 {
            let meta = file.metadata().await?;
            if self.read != self.source.len || !self.source.unchanged(&meta) {
                return Err(changed(&self.source));
            }
            return Ok(None);
        }
        Ok(Some(&self.buf[..filled]))
    }

    pub async fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.next_chunk_of(CHUNK).await
    }
}

/// The error of a file that is no longer what was hashed.
fn changed(source: &UploadSource) -> std::io::Error {
    std::io::Error::other(format!(
        "{} changed while it was being uploaded (it had {} bytes, SHA-256 {})",
        source.path.display(),
        source.len,
        source.sha256_hex()
    ))
}

/// The files of a run's uploads, each hashed once for all hosts.
#[derive(Default)]
pub struct UploadSources {
    known: Mutex<HashMap<PathBuf, Arc<tokio::sync::OnceCell<UploadSource>>>>,
}

impl UploadSources {
    /// The source for `path`: hashed on first use (the other hosts wait for
    /// that one hash), hashed again if the file changed since.
    pub async fn get(&self, path: &Path) -> std::io::Result<UploadSource> {
        loop {
            let cell = self
                .known
                .lock()
                .expect("never poisoned: no panics under the lock")
                .entry(path.to_path_buf())
                .or_default()
                .clone();
            let source = cell
                .get_or_try_init(|| {
                    let path = path.to_path_buf();
                    async move {
                        tokio::task::spawn_blocking(move || UploadSource::hash(&path))
                            .await
                            .map_err(std::io::Error::other)?
                    }
                })
                .await?
                .clone();
            let meta = tokio::fs::metadata(path).await?;
            if source.unchanged(&meta) {
                return Ok(source);
            }
            // Changed since it was hashed: forget it and hash it again.
            let mut known = self.known.lock().expect("never poisoned");
            if known.get(path).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                known.remove(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("payload.bin");
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        (dir, path, body)
    }

    #[tokio::test]
    async fn chunks_put_together_are_the_file_and_its_hash() {
        let (_dir, path, body) = file_of(CHUNK * 2 + 17);
        let source = UploadSources::default().get(&path).await.unwrap();
        assert_eq!(source.len(), body.len() as u64);
        assert_eq!(source.sha256_hex(), hex::encode(Sha256::digest(&body)));
        let mut copy = Vec::new();
        source.copy_to(&mut copy).await.unwrap();
        assert_eq!(copy, body);
    }

    #[tokio::test]
    async fn contents_in_memory_are_sent_in_chunks_with_their_hash() {
        let body: Vec<u8> = (0..CHUNK + 5).map(|i| (i % 7) as u8).collect();
        let source = UploadSource::in_memory(Path::new("made.sh"), body.clone());
        assert_eq!(source.sha256_hex(), hex::encode(Sha256::digest(&body)));
        let mut copy = Vec::new();
        source.copy_to(&mut copy).await.unwrap();
        assert_eq!(copy, body);
    }

    #[tokio::test]
    async fn a_file_changed_after_hashing_fails_the_copy() {
        let (_dir, path, _) = file_of(1000);
        let source = UploadSource::hash(&path).unwrap();
        std::fs::write(&path, vec![1u8; 2000]).unwrap();
        let err = source.copy_to(&mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
    }

    #[tokio::test]
    async fn a_changed_file_is_hashed_again() {
        let (_dir, path, _) = file_of(1000);
        let sources = UploadSources::default();
        let first = sources.get(&path).await.unwrap();
        std::fs::write(&path, b"other").unwrap();
        let second = sources.get(&path).await.unwrap();
        assert_eq!(second.len(), 5);
        assert_ne!(first.sha256_hex(), second.sha256_hex());
    }
}
