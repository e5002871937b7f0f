//! Hosts with settings of their own: sshd_config lines per address, and a
//! folder per host that the user the servers run as owns (for tests that
//! run stand-in commands keeping each host's state apart).

use std::path::{Path, PathBuf};

use super::{Host, Sshd, SshdEnv};

impl SshdEnv {
    /// Like [`SshdEnv::fleet`], with sshd_config lines of each host's own:
    /// `per_host(index, address)` (index counts from 0 over the fleet) gives
    /// lines that apply to connections to that address only (a `Match
    /// LocalAddress` block), e.g. `SetEnv PATH=/stand-ins:/usr/bin:/bin
    /// STATE=/its/folder` so that each host runs stand-in commands that keep
    /// their state in a folder of its own.
    pub fn fleet_with(
        &self,
        count: usize,
        per_host: impl Fn(usize, &str) -> String,
    ) -> (Vec<Sshd>, Vec<Host>) {
        let mut servers = Vec::new();
        let mut hosts = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(16);
            let offset = hosts.len();
            let server = Sshd::start_new(self.inner.clone(), n, "", &[], &|i, address| {
                per_host(offset + i, address)
            });
            hosts.extend(server.hosts());
            servers.push(server);
            left -= n;
        }
        (servers, hosts)
    }

    /// A folder `name` in this environment that the user the servers run as
    /// owns (a host's own folder, say). Created if missing.
    pub fn folder(&self, name: &str) -> PathBuf {
        let path = self.inner.dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        self.give(&path);
        path
    }

    /// Hands `path` and everything under it to the user the servers run as
    /// (files a test wrote as root into a host's folder).
    pub fn give_tree(&self, path: &Path) {
        self.give(path);
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(path).unwrap() {
                self.give_tree(&entry.unwrap().path());
            }
        }
    }
}

impl SshdEnv {
    /// The uid and gid the servers run as, when the tests run as root.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.inner.run_as.ids
    }
}
