//! Real OpenSSH `sshd` servers on loopback, for integration tests.
//!
//! [`SshdEnv`] holds what the servers of one test share: a scratch directory,
//! client keys (made with `ssh-keygen` when first asked for), the
//! `authorized_keys` and `known_hosts` files, and the user the servers run
//! as. [`Sshd`] is one `sshd -D` process listening on up to 16 addresses of
//! 127.0.0.0/8 (sshd's limit) on one free port; each address is one "host"
//! ([`Host`]). Hosts that must be stopped, restarted or "rebooted" alone get
//! a process of their own ([`SshdEnv::server`] with one address).
//!
//! sshd logs in only the user it runs as unless it runs as root, and refuses
//! root without `/run/sshd`; so when the tests run as root the servers run
//! as the `orchestrate-test` user made by `scripts/deps/ssh.sh`, otherwise as
//! the current user. Stopping a server kills its whole process tree (the
//! listener, each connection's sshd, and the commands they run), like a host
//! going down. Everything is killed on drop.
//!
//! Typical use, for a runner test that needs an inventory of SSH hosts:
//! ```ignore
//! let env = SshdEnv::new();
//! let (_servers, hosts) = env.fleet(20); // 20 hosts over 2 sshd processes (keep _servers alive)
//! env.trust(&hosts);                     // their keys into env.known_hosts
//! let target = env.target("web01", &hosts[0]); // a ready Target (ed25519 key, strict)
//! let lonely = env.server(1);            // a host of its own: stop()/start()/freeze()/thaw(),
//! let mut t = env.target("db01", &lonely.host()); // change_host_key(), and
//! t.reboot_command = Some(lonely.reboot_command()); // a "reboot" Session::reboot can wait for
//! ```
//! Other helpers: [`SshdEnv::key`] (ed25519, ECDSA, RSA, passphrase-encrypted,
//! unauthorized), [`SshdEnv::agent`] (an ssh-agent holding keys),
//! [`SshdEnv::password`] (the test user's password, when run as root),
//! [`Host::jump_spec`] (for `SshSettings::jump_host`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrate::transport::{HostKeyPolicy, Os, SshSettings, Target, TransportKind};

mod per_host;
mod procs;
mod tools;
use procs::descendants;
#[allow(unused_imports)]
pub use procs::process_alive;
pub use tools::Agent;
use tools::{keygen, read_pub, run};

pub const TEST_USER: &str = "orchestrate-test";
const SSHD: &str = "/usr/sbin/sshd";
const PASSWORD_FILE: &str = ".orchestrate-test-password";

/// The passphrase of [`ClientKey::Encrypted`].
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Client key kinds the environment can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ed25519,
    Ecdsa,
    Rsa,
    /// An ed25519 key encrypted with [`PASSPHRASE`].
    Encrypted,
    /// An ed25519 key that is not in authorized_keys.
    Unauthorized,
}

/// Who the servers run as (and so who logs in).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub user: String,
    pub home: PathBuf,
    /// uid/gid to switch to, when the tests run as root.
    pub ids: Option<(u32, u32)>,
}

struct EnvInner {
    dir: PathBuf,
    run_as: RunAs,
    keys: Mutex<HashMap<ClientKey, PathBuf>>,
}

/// What the servers of one test share. Dropping it removes the directory.
pub struct SshdEnv {
    inner: Arc<EnvInner>,
    /// The known_hosts file that [`SshdEnv::target`] points at.
    pub known_hosts: PathBuf,
}

/// One address of one server: what an inventory calls a host.
#[derive(Debug, Clone)]
pub struct Host {
    pub address: String,
    pub port: u16,
    /// `ssh-ed25519 AAAA...`, as an inventory's `host_key` pins it.
    pub host_key: String,
}

impl Host {
    /// `user@address:port`, as `SshSettings::jump_host` wants it.
    pub fn jump_spec(&self, user: &str) -> String {
        format!("{user}@{}:{}", self.address, self.port)
    }
}

fn next_block() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl SshdEnv {
    /// A fresh environment. Panics with a hint if OpenSSH or the test user is missing.
    pub fn new() -> SshdEnv {
        SshdEnv::as_user(TEST_USER)
    }

    /// A fresh environment whose servers run as (and log in) `user`, when the
    /// tests run as root: the become tests' users without sudo rights or
    /// with `requiretty` (scripts/deps/sudo.sh).
    pub fn as_user(user: &str) -> SshdEnv {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/deps/ssh.sh (as root) first"
        );
        let euid = unsafe { libc::geteuid() };
        let run_as = if euid == 0 {
            let out = Command::new("getent")
                .args(["passwd", user])
                .output()
                .expect("getent");
            let line = String::from_utf8_lossy(&out.stdout).to_string();
            let fields: Vec<&str> = line.trim().split(':').collect();
            assert!(
                fields.len() >= 7,
                "user {user} is missing: run scripts/deps/ssh.sh and sudo.sh (as root) first"
            );
            RunAs {
                user: user.to_string(),
                home: PathBuf::from(fields[5]),
                ids: Some((fields[2].parse().unwrap(), fields[3].parse().unwrap())),
            }
        } else {
            RunAs {
                user: std::env::var("USER").unwrap_or_else(|_| "nobody".into()),
                home: std::env::var("HOME").map(PathBuf::from).unwrap_or_default(),
                ids: None,
            }
        };
        let dir = std::env::temp_dir().join(format!(
            "orchestrate-sshd-{}-{}",
            std::process::id(),
            next_block()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let env = SshdEnv {
            known_hosts: dir.join("known_hosts"),
            inner: Arc::new(EnvInner {
                dir,
                run_as,
                keys: Mutex::new(HashMap::new()),
            }),
        };
        std::fs::write(env.authorized_keys(), "").unwrap();
        env.give(&env.inner.dir);
        env.give(&env.authorized_keys());
        env
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The user the servers run as, which is the only one that can log in.
    pub fn user(&self) -> &str {
        &self.inner.run_as.user
    }

    fn authorized_keys(&self) -> PathBuf {
        self.inner.dir.join("authorized_keys")
    }

    /// Hands a path to the user the servers run as.
    pub fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.inner.run_as.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// The private key file of `kind`, made (and authorized) on first use.
    pub fn key(&self, kind: ClientKey) -> PathBuf {
        let mut keys = self.inner.keys.lock().unwrap();
        if let Some(path) = keys.get(&kind) {
            return path.clone();
        }
        let (file, algo, passphrase) = match kind {
            ClientKey::Ed25519 => ("id_ed25519", "ed25519", ""),
            ClientKey::Ecdsa => ("id_ecdsa", "ecdsa", ""),
            ClientKey::Rsa => ("id_rsa", "rsa", ""),
            ClientKey::Encrypted => ("id_encrypted", "ed25519", PASSPHRASE),
            ClientKey::Unauthorized => ("id_stranger", "ed25519", ""),
        };
        let path = self.inner.dir.join(file);
        keygen(&path, algo, passphrase);
        if kind != ClientKey::Unauthorized {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(self.authorized_keys())
                .unwrap();
            writeln!(file, "{}", read_pub(&path)).unwrap();
        }
        keys.insert(kind, path.clone());
        path
    }

    /// An inventory of `hosts` (client `acme`, host `i` named `name(i)`)
    /// that logs in with the ed25519 key and checks keys in known_hosts.
    pub fn inventory(&self, hosts: &[Host], name: impl Fn(usize) -> String) -> String {
        let mut text = format!(
            "defaults:\n  transport: ssh\n  user: {}\n  ssh: {{ identity_file: '{}', known_hosts: '{}' }}\nclients:\n  acme:\n    hosts:\n",
            self.user(),
            self.key(ClientKey::Ed25519).display(),
            self.known_hosts.display()
        );
        for (i, host) in hosts.iter().enumerate() {
            text.push_str(&format!(
                "      - {{ name: {}, address: {}, port: {}, os: linux }}\n",
                name(i),
                host.address,
                host.port
            ));
        }
        text
    }

    /// The uid and gid the servers run as, when the tests run as root (to
    /// start a process the logged-in user owns).
    pub fn ids(&self) -> Option<(u32, u32)> {
        self.inner.run_as.ids
    }

    /// The test user's password, where the deps script set one (tests as root).
    pub fn password(&self) -> Option<String> {
        self.inner.run_as.ids?;
        let text = std::fs::read_to_string(self.inner.run_as.home.join(PASSWORD_FILE)).ok()?;
        Some(text.trim().to_string()).filter(|p| !p.is_empty())
    }

    /// One sshd process serving `hosts` addresses (1..=16).
    pub fn server(&self, hosts: usize) -> Sshd {
        self.server_with(hosts, 100)
    }

    /// Like [`SshdEnv::server`], with sshd's `MaxSessions`.
    pub fn server_with(&self, hosts: usize, max_sessions: u32) -> Sshd {
        self.server_configured(hosts, &format!("MaxSessions {max_sessions}"))
    }

    /// Like [`SshdEnv::server`], with sshd_config lines of its own (e.g.
    /// `MaxStartups 2`), in place of the harness's defaults for the same
    /// keywords.
    pub fn server_configured(&self, hosts: usize, lines: &str) -> Sshd {
        assert!(
            (1..=16).contains(&hosts),
            "sshd listens on at most 16 addresses"
        );
        Sshd::start_new(self.inner.clone(), hosts, lines, &[], &|_, _| String::new())
    }

    /// One sshd with more host keys besides ed25519 (`"rsa"`, `"ecdsa"`).
    pub fn server_with_host_keys(&self, hosts: usize, extra: &[&str]) -> Sshd {
        Sshd::start_new(self.inner.clone(), hosts, "", extra, &|_, _| String::new())
    }

    /// `count` hosts over as few sshd processes as sshd allows.
    pub fn fleet(&self, count: usize) -> (Vec<Sshd>, Vec<Host>) {
        let mut servers = Vec::new();
        let mut hosts = Vec::new();
        let mut left = count;
        while left > 0 {
            let n = left.min(16);
            let server = self.server(n);
            hosts.extend(server.hosts());
            servers.push(server);
            left -= n;
        }
        (servers, hosts)
    }

    /// Records `hosts`' keys in [`SshdEnv::known_hosts`].
    pub fn trust(&self, hosts: &[Host]) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.known_hosts)
            .unwrap();
        for host in hosts {
            writeln!(file, "[{}]:{} {}", host.address, host.port, host.host_key).unwrap();
        }
    }

    /// A target for `host`: ed25519 key, this env's known_hosts, strict policy.
    pub fn target(&self, name: &str, host: &Host) -> Target {
        Target {
            name: name.to_string(),
            address: host.address.clone(),
            port: Some(host.port),
            os: Os::Linux,
            user: Some(self.user().to_string()),
            kind: TransportKind::Ssh,
            ssh: SshSettings {
                identity_file: Some(self.key(ClientKey::Ed25519)),
                known_hosts: Some(self.known_hosts.clone()),
                ..SshSettings::default()
            },
            winrm: Default::default(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            reboot_command: None,
            r#become: Default::default(),
        }
    }

    /// Starts an `ssh-agent` holding `keys`; killed on drop.
    pub fn agent(&self, keys: &[ClientKey]) -> Agent {
        let socket = self.inner.dir.join(format!("agent-{}.sock", next_block()));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let agent = Agent { socket, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        // The socket file appears at bind(), before listen(): wait until it
        // takes a connection, or ssh-add may be refused.
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        for kind in keys {
            let path = self.key(*kind);
            run(Command::new("ssh-add")
                .arg("-q")
                .arg(&path)
                .env("SSH_AUTH_SOCK", &agent.socket)
                .stdin(Stdio::null()));
        }
        agent
    }
}

impl Default for SshdEnv {
    fn default() -> Self {
        SshdEnv::new()
    }
}

impl Drop for SshdEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.inner.dir);
    }
}

struct ServerState {
    dir: PathBuf,
    config: PathBuf,
    addresses: Vec<Ipv4Addr>,
    port: u16,
    env: Arc<EnvInner>,
    child: Mutex<Option<Child>>,
}

/// One sshd process. Stop, start and reboot it; it dies on drop.
pub struct Sshd {
    state: Arc<ServerState>,
    host_key: String,
    watching: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

/// Addresses nobody in this process has used, in a block chosen by pid.
fn pick_addresses(count: usize) -> Vec<Ipv4Addr> {
    let block = next_block();
    let pid = std::process::id();
    let second = (pid % 250) as u8 + 1;
    let third = ((pid / 250 + block) % 250) as u8 + 1;
    (0..count)
        .map(|i| Ipv4Addr::new(127, second, third, i as u8 + 2))
        .collect()
}

/// A port free on every address (sshd binds them all with one port).
fn pick_port(addresses: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind(SocketAddrV4::new(addresses[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let all: Vec<_> = addresses[1..]
            .iter()
            .map(|a| TcpListener::bind(SocketAddrV4::new(*a, port)))
            .collect();
        if all.iter().all(|r| r.is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {addresses:?}");
}

impl Sshd {
    fn start_new(
        env: Arc<EnvInner>,
        hosts: usize,
        global: &str,
        extra: &[&str],
        per_host: &dyn Fn(usize, &str) -> String,
    ) -> Sshd {
        let addresses = pick_addresses(hosts);
        let port = pick_port(&addresses);
        let dir = env.dir.join(format!("sshd-{}-{port}", addresses[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let host_key_path = dir.join("host_ed25519");
        keygen(&host_key_path, "ed25519", "");
        let mut config = String::new();
        if !global.trim().is_empty() {
            config.push_str(global.trim_end());
            config.push('\n');
        }
        for kind in extra {
            let path = dir.join(format!("host_{kind}"));
            keygen(&path, kind, "");
            config.push_str(&format!("HostKey {}\n", path.display()));
            if let Some((uid, gid)) = env.run_as.ids {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        for address in &addresses {
            config.push_str(&format!("ListenAddress {address}:{port}\n"));
        }
        let defaults = format!(
            "HostKey {hk}\nPidFile {dir}/sshd.pid\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nPermitEmptyPasswords no\nMaxStartups 1000:90:2000\n\
             MaxSessions 100\nMaxAuthTries 30\nAllowTcpForwarding yes\n\
             AllowAgentForwarding no\nX11Forwarding no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n\
             LoginGraceTime 60\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            hk = host_key_path.display(),
            dir = dir.display(),
            ak = env.dir.join("authorized_keys").display(),
        );
        // A keyword the caller set replaces the default (sshd keeps the
        // first value of most keywords but the last of some, MaxStartups).
        let keyword = |line: &str| line.split_whitespace().next().unwrap_or("").to_lowercase();
        let set: Vec<String> = global.lines().map(keyword).collect();
        for line in defaults.lines().filter(|l| !set.contains(&keyword(l))) {
            config.push_str(line);
            config.push('\n');
        }
        // Match blocks last: every line after a Match belongs to it.
        for (i, address) in addresses.iter().enumerate() {
            let lines = per_host(i, &address.to_string());
            if !lines.trim().is_empty() {
                config.push_str(&format!(
                    "Match LocalAddress {address}\n{}\n",
                    lines.trim_end()
                ));
            }
        }
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        if let Some((uid, gid)) = env.run_as.ids {
            for path in [
                &dir,
                &host_key_path,
                &host_key_path.with_extension("pub"),
                &config_path,
            ] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let host_key = read_pub(&host_key_path);
        let state = Arc::new(ServerState {
            dir: dir.clone(),
            config: config_path,
            addresses,
            port,
            env,
            child: Mutex::new(None),
        });
        state.start();
        // The reboot watcher: a host "reboots" when its reboot command drops a file.
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let state = state.clone();
            let watching = watching.clone();
            std::thread::spawn(move || {
                let request = state.dir.join("reboot-request");
                while watching.load(Ordering::Relaxed) {
                    if request.exists() {
                        let _ = std::fs::remove_file(&request);
                        std::thread::sleep(Duration::from_millis(200));
                        state.stop();
                        std::thread::sleep(Duration::from_millis(700));
                        if watching.load(Ordering::Relaxed) {
                            state.start();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sshd {
            state,
            host_key,
            watching,
            watcher: Some(watcher),
        }
    }

    pub fn hosts(&self) -> Vec<Host> {
        self.state
            .addresses
            .iter()
            .map(|a| Host {
                address: a.to_string(),
                port: self.state.port,
                host_key: self.host_key.clone(),
            })
            .collect()
    }

    /// `<type> <base64>` of the host key of `kind` (`"ed25519"`, or one of
    /// the extra kinds the server was started with).
    pub fn host_key_of(&self, kind: &str) -> String {
        read_pub(&self.state.dir.join(format!("host_{kind}")))
    }

    pub fn host(&self) -> Host {
        self.hosts().remove(0)
    }

    /// Kills the server and everything it runs, as a host going down would.
    pub fn stop(&self) {
        self.state.stop();
    }

    /// Freezes the server and everything it runs (SIGSTOP): a host that
    /// hangs, or a network that drops packets, without closing anything.
    pub fn freeze(&self) {
        self.state.signal_tree(libc::SIGSTOP);
    }

    /// Undoes [`Sshd::freeze`].
    pub fn thaw(&self) {
        self.state.signal_tree(libc::SIGCONT);
    }

    /// Starts it again (same host key, addresses and port).
    pub fn start(&self) {
        self.state.start();
    }

    /// A command that, run on this host, makes it "reboot": the server goes
    /// down (connections drop) and comes back about a second later.
    pub fn reboot_command(&self) -> String {
        format!("touch {}/reboot-request", self.state.dir.display())
    }

    /// Gives the server a new host key (as a reinstalled host has) and restarts it.
    pub fn change_host_key(&mut self) {
        self.state.stop();
        let path = self.state.dir.join("host_ed25519");
        keygen(&path, "ed25519", "");
        if let Some((uid, gid)) = self.state.env.run_as.ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        self.host_key = read_pub(&path);
        self.state.start();
    }

    /// sshd's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.watching.store(false, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        self.state.stop();
    }
}

impl ServerState {
    fn start(&self) {
        let mut child = self.child.lock().unwrap();
        if child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let mut command = Command::new(SSHD);
        command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .current_dir(&self.dir)
            .process_group(0);
        if let Some((uid, gid)) = self.env.run_as.ids {
            command
                .uid(uid)
                .gid(gid)
                .env("HOME", &self.env.run_as.home)
                .env("USER", &self.env.run_as.user)
                .env("LOGNAME", &self.env.run_as.user);
        }
        let mut spawned = command.spawn().expect("start sshd");
        let address = SocketAddrV4::new(self.addresses[0], self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = spawned.try_wait() {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        *child = Some(spawned);
    }

    fn signal_tree(&self, signal: i32) {
        let child = self.child.lock().unwrap();
        if let Some(running) = child.as_ref() {
            let mut tree = descendants(running.id() as i32);
            tree.push(running.id() as i32);
            for pid in tree {
                unsafe {
                    libc::kill(pid, signal);
                }
            }
        }
    }

    fn stop(&self) {
        let mut child = self.child.lock().unwrap();
        let Some(mut running) = child.take() else {
            return;
        };
        // Freeze the listener first, so it accepts and forks nothing more
        // while its tree is scanned and killed: a connection accepted after
        // the scan would otherwise be served by an orphan the kill misses.
        let listener = running.id() as i32;
        unsafe {
            libc::kill(listener, libc::SIGSTOP);
        }
        for pid in descendants(listener) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        unsafe {
            libc::kill(listener, libc::SIGKILL);
        }
        let _ = running.wait();
    }
}
