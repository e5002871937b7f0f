//! Rehearsals: a playbook run against a simulated fleet (`orchestrate
//! rehearse`), so an operator sees waves, budgets, timings and the client's
//! report before a real endpoint is touched, and so the tool can be driven
//! at a scale no test machine hosts with real sshd processes.
//!
//! - [`scenario`]: the YAML file that says what simulated hosts answer and
//!   how they fail.
//! - [`wire`]: the script inside an SSH exec request (readers, payloads).
//! - [`endpoint`]: the simulated hosts, their state and their answers
//!   (pure, seeded).
//! - [`files`]: what a simulated host knows of the files uploaded to it
//!   (size and SHA-256 per path, never the contents).
//! - [`simulator`]: the SSH server (russh) that plays every endpoint on
//!   127.0.0.0/8.
//! - [`sftp`]: its `sftp` subsystem, so `upload:` and `script:` steps
//!   rehearse too.
//! - [`fleet`]: the real plan made into a rehearsal's (durations scaled,
//!   targets pointed at the simulator).

pub mod endpoint;
pub mod files;
pub mod fleet;
pub mod scenario;
pub mod sftp;
pub mod simulator;
pub mod wire;

use std::io::Write as _;
use std::path::Path;

/// Writes the rehearsal's client key (ed25519, from the seed) to `path`,
/// readable by its owner only. The simulator accepts any key: this one
/// only spares the operator's own keys and agent.
pub fn write_client_key(path: &Path, seed: u64) -> std::io::Result<()> {
    let key = simulator::host_key(seed ^ 0x636c_6965_6e74, "rehearsal client");
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut file = crate::owner_only::create(path)?;
    file.write_all(text.as_bytes())
}

/// Raises the soft limit on open files to the hard limit: a thousand hosts
/// at once is two thousand sockets in one process (the controller's and
/// the simulator's ends).
pub fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
