//! systemd for the lab's real ClamAV: `clamd` and `clamonacc` from Debian's
//! packages, run as root by the test (clamonacc needs root and fanotify;
//! the sshd sessions of the lab run as an unprivileged user and cannot
//! start them), each host's with that host's own config, socket and
//! database under its root folder.
//!
//! The `systemctl` stand-in (`tests/standins/bin/systemctl`) hands the
//! units below to this supervisor over a FIFO in the host's state folder
//! (`systemd.fifo`, one line per request: `VERB UNIT REPLY-FIFO`, answered
//! with `EXIT-CODE MESSAGE`) and keeps every other unit as state files. What
//! is copied from the units Debian ships (`/lib/systemd/system/`, the same
//! as upstream's `clamd/clamav-daemon.service.in` and
//! `clamonacc/clamav-clamonacc.service.in`):
//! - `clamav-daemon` (and EPEL's `clamd@scan`): `clamd --foreground`,
//!   `Type=simple`, so `start` returns once the process runs and clamd opens
//!   its socket when its database is loaded (or exits if it cannot load it).
//!   Not copied: `ConditionPathExistsGlob=/var/lib/clamav/{main,daily}.*`,
//!   since the lab's only database is a custom one (official ones are
//!   signed by Cisco and cannot be built here).
//! - `clamav-clamonacc`: `Requires=clamav-daemon` (starting it starts clamd,
//!   stopping clamd stops it), `ExecStartPre` waits for clamd's socket,
//!   `clamonacc -F`, stopped with SIGKILL (`ExecStop=/bin/kill -SIGKILL`).
//!   Not copied: `--move=/root/quarantine` (it would write outside the lab);
//!   of a drop-in's `ExecStart`, only `--fdpass` is honoured.
//! - `systemctl kill --signal=SIG UNIT` signals the unit's process.
//!
//! Every process is killed when the lab is dropped (and, should the test
//! process die, by `PR_SET_PDEATHSIG`): no state is left on the machine.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The units this supervisor runs for real; all others are the stand-in's.
pub const REAL_UNITS: &[&str] = &["clamav-daemon", "clamd@scan", "clamav-clamonacc"];

pub struct Services {
    fifo: PathBuf,
    running: Arc<Mutex<HashMap<String, Child>>>,
    thread: Option<JoinHandle<()>>,
}

struct Supervisor {
    state: PathBuf,
    root: PathBuf,
    running: Arc<Mutex<HashMap<String, Child>>>,
}

impl Services {
    /// Starts the supervisor of the host whose state folder is `state`;
    /// `owner` gets the FIFO (the user the lab's sessions run as).
    pub fn start(state: &Path, owner: Option<(u32, u32)>) -> Services {
        let fifo = state.join("systemd.fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&fifo, Some(uid), Some(gid)).unwrap();
        }
        // Read and write: a FIFO opened so never reads end-of-file when a
        // writer closes, and opening it never blocks.
        let requests = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let running = Arc::new(Mutex::new(HashMap::new()));
        let supervisor = Supervisor {
            state: state.to_path_buf(),
            root: state.join("root"),
            running: running.clone(),
        };
        let thread = std::thread::spawn(move || supervisor.serve(requests));
        Services {
            fifo,
            running,
            thread: Some(thread),
        }
    }

    /// Whether `unit` runs (its process is alive and not stopped by a test).
    pub fn is_running(&self, unit: &str) -> bool {
        let mut running = self.running.lock().unwrap();
        running
            .get_mut(unit)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills every process and ends the supervisor.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Ok(mut f) = OpenOptions::new().write(true).open(&self.fifo) {
                let _ = f.write_all(b"quit\n");
            }
            let _ = thread.join();
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Supervisor {
    fn serve(self, requests: File) {
        for line in BufReader::new(requests).lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split(' ').collect();
            if words[0] == "quit" {
                break;
            }
            let [verb, unit, reply] = words[..] else {
                continue;
            };
            let (code, message) = self.handle(verb, unit);
            answer(Path::new(reply), code, &message);
        }
        let mut running = self.running.lock().unwrap();
        for (_, mut child) in running.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn handle(&self, verb: &str, unit: &str) -> (i32, String) {
        match verb {
            "start" => self.start(unit),
            "restart" => {
                self.stop(unit);
                self.start(unit)
            }
            "stop" => {
                self.stop(unit);
                (0, String::new())
            }
            "is-active" => {
                if self.alive(unit) {
                    (0, "active".into())
                } else {
                    (3, "inactive".into())
                }
            }
            _ => match verb.strip_prefix("kill:") {
                Some(signal) => self.signal(unit, signal),
                None => (1, format!("unsupported: {verb} {unit}")),
            },
        }
    }

    fn alive(&self, unit: &str) -> bool {
        let mut running = self.running.lock().unwrap();
        match running.get_mut(unit) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The clamd config the unit reads (Debian's, else EPEL's).
    fn config(&self, unit: &str) -> PathBuf {
        let deb = self.root.join("etc/clamav/clamd.conf");
        let rpm = self.root.join("etc/clamd.d/scan.conf");
        match unit {
            "clamav-daemon" => deb,
            "clamd@scan" => rpm,
            _ if deb.exists() => deb,
            _ => rpm,
        }
    }

    fn clamd_unit(&self) -> &'static str {
        if self.root.join("etc/clamav/clamd.conf").exists() {
            "clamav-daemon"
        } else {
            "clamd@scan"
        }
    }

    fn start(&self, unit: &str) -> (i32, String) {
        if self.alive(unit) {
            return (0, String::new());
        }
        let conf = self.config(unit);
        let log_dir = self.state.join("journal");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = File::create(log_dir.join(format!("{unit}.log"))).unwrap();
        let mut command = if unit == "clamav-clamonacc" {
            // Requires=clamav-daemon, then ExecStartPre: wait for the socket.
            let clamd = self.clamd_unit();
            if !self.alive(clamd) {
                let (code, message) = self.start(clamd);
                if code != 0 {
                    return (code, message);
                }
            }
            if !wait_for_socket(&conf, Duration::from_secs(10)) {
                return (
                    1,
                    format!("Job for {unit}.service failed: clamd's socket never appeared"),
                );
            }
            let mut c = Command::new("/usr/sbin/clamonacc");
            // A drop-in may add --fdpass (the playbook's does).
            let dropin = self
                .root
                .join("etc/systemd/system/clamav-clamonacc.service.d/orchestrate.conf");
            if std::fs::read_to_string(dropin).is_ok_and(|t| t.contains("--fdpass")) {
                c.arg("--fdpass");
            }
            c.arg("-F")
                .arg(format!("--config-file={}", conf.display()))
                .arg(format!(
                    "--log={}",
                    self.root.join("var/log/clamav/clamonacc.log").display()
                ));
            c
        } else {
            let mut c = Command::new("/usr/sbin/clamd");
            c.arg("--foreground")
                .arg(format!("--config-file={}", conf.display()));
            c
        };
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match command.spawn() {
            Ok(child) => {
                self.running.lock().unwrap().insert(unit.to_string(), child);
                (0, String::new())
            }
            Err(e) => (1, format!("Job for {unit}.service failed: {e}")),
        }
    }

    fn stop(&self, unit: &str) {
        if unit != "clamav-clamonacc" {
            // Requires=: clamonacc goes down with clamd.
            self.stop("clamav-clamonacc");
        }
        let child = self.running.lock().unwrap().remove(unit);
        if let Some(mut child) = child {
            let signal = if unit == "clamav-clamonacc" {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            unsafe { libc::kill(child.id() as i32, signal) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, unit: &str, signal: &str) -> (i32, String) {
        let number = match signal.trim_start_matches("SIG") {
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            "KILL" => libc::SIGKILL,
            "TERM" => libc::SIGTERM,
            other => return (1, format!("Failed to parse signal string {other}.")),
        };
        let running = self.running.lock().unwrap();
        match running.get(unit) {
            Some(child) => {
                unsafe { libc::kill(child.id() as i32, number) };
                (0, String::new())
            }
            None => (
                1,
                format!("Failed to kill unit {unit}.service: not running"),
            ),
        }
    }
}

/// Waits until clamd's `LocalSocket` (from `conf`) exists.
fn wait_for_socket(conf: &Path, within: Duration) -> bool {
    let text = std::fs::read_to_string(conf).unwrap_or_default();
    let Some(socket) = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LocalSocket "))
        .next_back()
    else {
        return false;
    };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if Path::new(socket.trim()).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Writes the answer into the stand-in's reply FIFO (it opens it for
/// reading right after sending the request; a stand-in that died is given
/// up on after a few seconds).
fn answer(reply: &Path, code: i32, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(reply)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{code} {}", message.replace('\n', " "));
                return;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return,
        }
    }
}
