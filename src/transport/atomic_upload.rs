//! Uploads that replace a file only once the new copy is whole.
//!
//! Writing straight to the destination leaves, when the connection is cut
//! half-way, a truncated file there, and destroys the good copy that was
//! there before (an installer, a config a rollback needs). So every
//! transport writes beside the destination, under a temporary name in the
//! same folder (so the final rename stays on one file system, and is
//! atomic), checks the copy's size and SHA-256 on the host, and only then
//! renames it over the destination. A copy that does not check out is
//! removed and the destination is left as it was.
//!
//! This module holds what is common to the transports: the temporary name,
//! what the copy must be, and the shell and PowerShell that check and
//! rename it on the host. How the bytes get there (SFTP, WinRM, a local
//! write) stays with each transport, so streaming them composes with this.

use sha2::{Digest, Sha256};

use super::Os;
use crate::quote::{ps_quote, sh_quote};

/// What the copy on the host must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Expected {
    pub fn of(contents: &[u8]) -> Expected {
        Expected {
            size: contents.len() as u64,
            sha256: hex::encode(Sha256::digest(contents)),
        }
    }
}

/// The `UNIQUE` of one temporary copy: 122 random bits. Not a process id
/// and a counter: a controller in a container is pid 1 on every run, so a
/// copy left by a cut run would refuse (exclusive creation) the same name
/// on every later run, and two controllers writing to one share, or one
/// machine under two names, must never write the same copy.
pub fn unique() -> String {
    super::unguessable()
}

/// `DIR/.NAME.orchestrate-UNIQUE.tmp` beside `dest` (Windows paths split
/// on `\` and `/`).
pub fn temp_beside(os: Os, dest: &str, unique: &str) -> String {
    let separators: &[char] = if os == Os::Windows {
        &['\\', '/']
    } else {
        &['/']
    };
    let (dir, name) = match dest.rfind(separators) {
        Some(at) => dest.split_at(at + 1),
        None => ("", dest),
    };
    format!("{dir}.{name}.orchestrate-{unique}.tmp")
}

/// POSIX shell: check `temp` against `expected` (size always; SHA-256 with
/// `sha256sum` or `shasum -a 256`, whichever the host has), then rename it
/// over `dest`; a copy that does not check out, or cannot be renamed (a
/// folder in the way), is removed, exit non-zero.
pub fn sh_check_and_replace(temp: &str, dest: &str, expected: &Expected) -> String {
    format!(
        "tmp={tmp}; dest={dest}\n\
         if command -v sha256sum >/dev/null 2>&1; then sum=$(sha256sum < \"$tmp\"); \
         elif command -v shasum >/dev/null 2>&1; then sum=$(shasum -a 256 < \"$tmp\"); \
         else sum=; fi\n\
         sum=${{sum%% *}}; size=$(wc -c < \"$tmp\" | tr -d ' ')\n\
         if [ \"$size\" != {size} ] || {{ [ -n \"$sum\" ] && [ \"$sum\" != {sha} ]; }}; then \
         rm -f \"$tmp\"; echo \"the copy on the host has $size bytes and SHA-256 ${{sum:-(no sha256sum there)}}; \
         expected {size} bytes and {sha}\" >&2; exit 1; fi\n\
         mv -f \"$tmp\" \"$dest\" || {{ rc=$?; rm -f \"$tmp\"; exit $rc; }}\n",
        tmp = sh_quote(temp),
        dest = sh_quote(dest),
        size = expected.size,
        sha = expected.sha256,
    )
}

/// PowerShell: the same as [`sh_check_and_replace`], with `Get-FileHash`
/// and `Move-Item -Force`.
pub fn powershell_check_and_replace(temp: &str, dest: &str, expected: &Expected) -> String {
    format!(
        "$ErrorActionPreference = 'Stop'\n\
         $tmp = {tmp}; $dest = {dest}\n\
         $size = (Get-Item -LiteralPath $tmp).Length\n\
         $sum = (Get-FileHash -LiteralPath $tmp -Algorithm SHA256).Hash.ToLowerInvariant()\n\
         if ($size -ne {size} -or $sum -ne '{sha}') {{\n\
         Remove-Item -LiteralPath $tmp -Force\n\
         [Console]::Error.WriteLine(\"the copy on the host has $size bytes and SHA-256 $sum; expected {size} bytes and {sha}\")\n\
         exit 1\n\
         }}\n\
         Move-Item -LiteralPath $tmp -Destination $dest -Force\n",
        tmp = ps_quote(temp),
        dest = ps_quote(dest),
        size = expected.size,
        sha = expected.sha256,
    )
}

/// The local transport's upload: write beside `dest` (created exclusively,
/// so a planted file or link is not followed), set `mode`, flush to disk,
/// rename over `dest`. The temporary file goes if anything fails.
pub fn replace_local(contents: &[u8], dest: &str, mode: u32, unique: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let temp = temp_beside(Os::Linux, dest, unique);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temp, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_copy_is_beside_the_destination() {
        assert_eq!(
            temp_beside(Os::Linux, "/opt/av/setup.sh", "7"),
            "/opt/av/.setup.sh.orchestrate-7.tmp"
        );
        assert_eq!(
            temp_beside(Os::Windows, "C:\\Temp\\kes.msi", "7"),
            "C:\\Temp\\.kes.msi.orchestrate-7.tmp"
        );
        assert_eq!(temp_beside(Os::Linux, "x", "7"), ".x.orchestrate-7.tmp");
    }

    #[test]
    fn temporary_names_are_random_not_a_pid_and_a_counter() {
        let (a, b) = (unique(), unique());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn a_local_upload_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        std::fs::write(&dest, "old").unwrap();
        let dest = dest.to_str().unwrap();
        replace_local(b"new", dest, 0o640, "1").unwrap();
        assert_eq!(std::fs::read_to_string(dest).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn the_shell_check_renames_a_good_copy_and_drops_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let temp = dir.path().join("temp");
        let (dest_s, temp_s) = (dest.to_str().unwrap(), temp.to_str().unwrap());
        let sh = |script: String| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .status()
                .unwrap()
                .success()
        };
        std::fs::write(&dest, "good old copy").unwrap();
        std::fs::write(&temp, "trunc").unwrap();
        let whole = Expected::of(b"truncated no more");
        assert!(!sh(sh_check_and_replace(temp_s, dest_s, &whole)));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good old copy");
        assert!(!temp.exists(), "the bad copy is removed");
        std::fs::write(&temp, "truncated no more").unwrap();
        assert!(sh(sh_check_and_replace(temp_s, dest_s, &whole)));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "truncated no more");
        assert!(!temp.exists());
    }
}
