//! What a simulated host knows of the files written to it: for each path,
//! its size and the SHA-256 of its contents, hashed as they arrive, and
//! never the contents themselves. That is all a host's answers to the
//! transport depend on (the check of an upload's copy compares exactly
//! those two; a copied script is run by its path), and it keeps a
//! rehearsal's memory bounded whatever is uploaded: a 200 MB installer
//! sent to a thousand simulated hosts costs a few hundred bytes each.
//!
//! Pure, like [`super::endpoint`]: [`super::sftp`] feeds it what the SFTP
//! client sends, and [`super::endpoint::Fleet::answer`] the check scripts
//! and runs that read it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::wire::{self, UploadCheck};
use crate::transport::Os;

/// Files one host keeps at most. The transport removes what it writes to
/// temporary paths and renames its copies over their destinations, so a
/// playbook's host holds one file per `upload:` destination; past this, a
/// new file is refused as a host out of inodes would refuse it.
pub const MAX_FILES: usize = 512;

/// A gap written past the end of a file that is hashed as the zeros a real
/// file would hold there; past this, the contents are no longer known.
/// (The transport writes in order, so it never leaves one; hashing a huge
/// gap would hold the host's lock and a runtime thread for its length.)
const MAX_HASHED_GAP: u64 = 1 << 20;

/// What is known of one file.
#[derive(Clone)]
struct Facts {
    /// Which creation of the path this is: a handle opened on a file since
    /// removed or replaced writes nowhere.
    generation: u64,
    size: u64,
    /// The hash of the contents so far; `None` once a write landed before
    /// the end of what was written (the contents can no longer be known
    /// without keeping them).
    hash: Option<Sha256>,
}

impl Facts {
    fn sha256_hex(&self) -> Option<String> {
        self.hash.clone().map(|h| hex::encode(h.finalize()))
    }
}

/// Why a file could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCreated {
    /// Exclusive creation, and the path is taken.
    Exists,
    /// The host already keeps [`MAX_FILES`].
    TooMany,
}

/// The files of one simulated host.
#[derive(Default)]
pub struct HostFiles {
    files: HashMap<String, Facts>,
    created: u64,
}

/// The one name of `path` on a host of `os`: Windows paths case-folded,
/// with `/` for `\` and without the `/` SFTP puts before a drive letter
/// (`/C:/Temp/a` and `C:\Temp\a` are one file).
pub fn key(os: Os, path: &str) -> String {
    if os != Os::Windows {
        return path.to_string();
    }
    let forward = path.replace('\\', "/").to_lowercase();
    let bytes = forward.as_bytes();
    if bytes.len() >= 3 && bytes[0] == b'/' && bytes[2] == b':' && bytes[1].is_ascii_alphabetic() {
        return forward[1..].to_string();
    }
    forward
}

impl HostFiles {
    pub fn exists(&self, key: &str) -> bool {
        self.files.contains_key(key)
    }

    /// The size of the file at `key`, if there is one.
    pub fn size(&self, key: &str) -> Option<u64> {
        self.files.get(key).map(|f| f.size)
    }

    /// Opens `key` for writing, creating it (empty) when it is not there or
    /// `truncate` says so: the generation that writes to it.
    pub fn create(
        &mut self,
        key: &str,
        exclusive: bool,
        truncate: bool,
    ) -> Result<u64, NotCreated> {
        if let Some(file) = self.files.get(key) {
            if exclusive {
                return Err(NotCreated::Exists);
            }
            if !truncate {
                return Ok(file.generation);
            }
        } else if self.files.len() >= MAX_FILES {
            return Err(NotCreated::TooMany);
        }
        self.created += 1;
        let facts = Facts {
            generation: self.created,
            size: 0,
            hash: Some(Sha256::new()),
        };
        self.files.insert(key.to_string(), facts);
        Ok(self.created)
    }

    /// The generation of an existing `key`, to write to it without
    /// creating it.
    pub fn generation(&self, key: &str) -> Option<u64> {
        self.files.get(key).map(|f| f.generation)
    }

    /// `data` written at `offset` into generation `generation` of `key`
    /// (nowhere if that file has since gone). `None` for `offset`: at the
    /// end (append).
    pub fn write(&mut self, key: &str, generation: u64, offset: Option<u64>, data: &[u8]) {
        let Some(file) = self
            .files
            .get_mut(key)
            .filter(|f| f.generation == generation)
        else {
            return;
        };
        let offset = offset.unwrap_or(file.size);
        let Some(end) = offset.checked_add(data.len() as u64) else {
            // Past the largest offset a file can have: nothing is written.
            file.hash = None;
            return;
        };
        if offset < file.size || offset - file.size > MAX_HASHED_GAP {
            // Over what is there (or after a huge hole): unknowable
            // without the contents.
            file.hash = None;
        } else if let Some(hash) = &mut file.hash {
            let zeros = [0u8; 8192];
            let mut gap = offset - file.size;
            while gap > 0 {
                let n = gap.min(zeros.len() as u64) as usize;
                hash.update(&zeros[..n]);
                gap -= n as u64;
            }
            hash.update(data);
        }
        file.size = file.size.max(end);
    }

    pub fn remove(&mut self, key: &str) -> bool {
        self.files.remove(key).is_some()
    }

    /// Moves `from` to `to`, replacing what is there. `false`: no `from`.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        match self.files.remove(from) {
            Some(file) => {
                self.files.insert(to.to_string(), file);
                true
            }
            None => false,
        }
    }

    /// Copies `from` to `to` (a new file there, replacing what was).
    /// `false`: no `from`, or no room for one more file.
    pub fn copy(&mut self, from: &str, to: &str) -> bool {
        let Some(mut file) = self.files.get(from).cloned() else {
            return false;
        };
        if !self.files.contains_key(to) && self.files.len() >= MAX_FILES {
            return false;
        }
        self.created += 1;
        file.generation = self.created;
        self.files.insert(to.to_string(), file);
        true
    }

    /// The host's answer (exit code, standard error) to one of the
    /// transport's own scripts about files: the check of an upload's copy,
    /// the move into place of a `become` upload, and the run of a
    /// `script:` step's copy that never arrived. `None` for any other
    /// script, a run of a copy that did arrive included: the scenario
    /// answers those.
    pub fn answer(&mut self, os: Os, script: &str) -> Option<(i32, String)> {
        if let Some(check) = wire::upload_check(script) {
            return Some(self.check_and_replace(os, &check));
        }
        if let Some((staged, dest)) = wire::become_move(script) {
            // `cp` then `mv` as the become user, so the copy is that user's.
            let staged_key = key(os, &staged);
            if !self.files.contains_key(&staged_key) {
                return Some((
                    1,
                    format!("cp: cannot stat '{staged}': No such file or directory\n"),
                ));
            }
            if !self.copy(&staged_key, &key(os, &dest)) {
                // Out of room for one more file (see MAX_FILES), as cp says it.
                return Some((
                    1,
                    format!(
                        "cp: cannot create regular file '{dest}.orchestrate-new': No space left on device\n"
                    ),
                ));
            }
            self.remove(&staged_key);
            return Some((0, String::new()));
        }
        let path = wire::copied_script(script)?;
        if self.exists(&key(os, &path)) {
            return None;
        }
        Some(match os {
            Os::Windows => (
                1,
                format!(
                    "& : The term '{path}' is not recognized as the name of a cmdlet, function, \
                     script file, or operable program.\n"
                ),
            ),
            _ => (127, format!("sh: 1: {path}: not found\n")),
        })
    }

    /// What the transport's check-and-rename script (see
    /// `transport::atomic_upload`) does on a host of `os` with these files:
    /// its exit code and standard error, the temporary copy renamed over
    /// the destination when it checks out, removed when it does not.
    fn check_and_replace(&mut self, os: Os, check: &UploadCheck) -> (i32, String) {
        let (temp, dest) = (key(os, &check.temp), key(os, &check.dest));
        let expected = format!("expected {} bytes and {}", check.size, check.sha256);
        let Some(file) = self.files.get(&temp) else {
            // What sh (dash) and PowerShell say of a file that is not there.
            let said = match os {
                Os::Windows => format!(
                    "Get-Item : Cannot find path '{}' because it does not exist.\n",
                    check.temp
                ),
                _ => {
                    let missing = format!("sh: 1: cannot open {}: No such file\n", check.temp);
                    format!(
                        "{missing}{missing}the copy on the host has  bytes and SHA-256 \
                         (no sha256sum there); {expected}\n"
                    )
                }
            };
            return (1, said);
        };
        let sum = file.sha256_hex();
        if file.size == check.size && sum.as_deref() == Some(check.sha256.as_str()) {
            self.rename(&temp, &dest);
            return (0, String::new());
        }
        let size = file.size;
        self.remove(&temp);
        let sum = sum.unwrap_or_else(|| "(not known: written out of order)".into());
        (
            1,
            format!("the copy on the host has {size} bytes and SHA-256 {sum}; {expected}\n"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::atomic_upload::Expected;

    fn written(files: &mut HostFiles, key: &str, pieces: &[&[u8]]) {
        let generation = files.create(key, true, false).unwrap();
        let mut at = 0;
        for piece in pieces {
            files.write(key, generation, Some(at), piece);
            at += piece.len() as u64;
        }
    }

    fn check(temp: &str, dest: &str, contents: &[u8]) -> UploadCheck {
        let expected = Expected::of(contents);
        UploadCheck {
            temp: temp.into(),
            dest: dest.into(),
            size: expected.size,
            sha256: expected.sha256,
        }
    }

    #[test]
    fn a_copy_written_in_pieces_checks_out_and_takes_the_destinations_place() {
        let mut files = HostFiles::default();
        written(&mut files, "/opt/.a.tmp", &[b"hello ", b"world"]);
        let (exit, said) =
            files.check_and_replace(Os::Linux, &check("/opt/.a.tmp", "/opt/a", b"hello world"));
        assert_eq!((exit, said.as_str()), (0, ""));
        assert!(!files.exists("/opt/.a.tmp"));
        assert_eq!(files.size("/opt/a"), Some(11));
    }

    #[test]
    fn a_copy_that_differs_or_is_missing_fails_as_the_script_says_and_is_removed() {
        let mut files = HostFiles::default();
        written(&mut files, "/opt/.a.tmp", &[b"hello"]);
        let (exit, said) =
            files.check_and_replace(Os::Linux, &check("/opt/.a.tmp", "/opt/a", b"hello world"));
        assert_eq!(exit, 1);
        let sum = Expected::of(b"hello").sha256;
        assert!(
            said.starts_with(&format!(
                "the copy on the host has 5 bytes and SHA-256 {sum}; expected 11 bytes"
            )),
            "{said}"
        );
        assert!(!files.exists("/opt/.a.tmp") && !files.exists("/opt/a"));
        let (exit, said) =
            files.check_and_replace(Os::Linux, &check("/opt/.a.tmp", "/opt/a", b"x"));
        assert_eq!(exit, 1);
        assert!(said.contains("cannot open /opt/.a.tmp"), "{said}");
        let (exit, said) =
            files.check_and_replace(Os::Windows, &check("C:\\T\\.a.tmp", "C:\\T\\a", b"x"));
        assert_eq!(exit, 1);
        assert!(said.contains("Cannot find path 'C:\\T\\.a.tmp'"), "{said}");
    }

    #[test]
    fn windows_paths_are_one_file_however_sftp_and_powershell_spell_them() {
        let mut files = HostFiles::default();
        let sftp = key(Os::Windows, "/C:/Windows/Temp/.kes.msi.tmp");
        written(&mut files, &sftp, &[b"msi"]);
        let (exit, _) = files.check_and_replace(
            Os::Windows,
            &check(
                "C:\\Windows\\Temp\\.kes.msi.tmp",
                "C:\\Windows\\Temp\\kes.msi",
                b"msi",
            ),
        );
        assert_eq!(exit, 0);
        assert!(files.exists(&key(Os::Windows, "/C:/Windows/Temp/KES.msi")));
    }

    #[test]
    fn exclusive_creation_refuses_a_taken_name_and_the_host_keeps_a_bounded_number() {
        let mut files = HostFiles::default();
        files.create("/a", true, false).unwrap();
        assert_eq!(files.create("/a", true, false), Err(NotCreated::Exists));
        for n in 1..MAX_FILES {
            files.create(&format!("/f{n}"), true, false).unwrap();
        }
        assert_eq!(
            files.create("/one-more", true, false),
            Err(NotCreated::TooMany)
        );
        assert!(
            files.create("/a", false, true).is_ok(),
            "an existing file can be truncated"
        );
    }

    #[test]
    fn a_write_over_what_was_written_makes_the_contents_unknown_and_the_check_fail() {
        let mut files = HostFiles::default();
        let generation = files.create("/t", true, false).unwrap();
        files.write("/t", generation, Some(0), b"abc");
        files.write("/t", generation, Some(1), b"b");
        let (exit, said) = files.check_and_replace(Os::Linux, &check("/t", "/d", b"abc"));
        assert_eq!(exit, 1);
        assert!(said.contains("not known"), "{said}");
    }
}
