//! A lab of Linux endpoints for the shipped Linux playbooks: real OpenSSH
//! servers on loopback (one address per host), each host with a folder of
//! its own where the playbooks' path variables are pointed (`root/...`).
//! Real where it can be: ClamAV (`clamd`, `clamonacc`, `clamdscan`,
//! `freshclam` from Debian; [`services`] runs the daemons as root,
//! [`mirror`] serves the signatures) and `dpkg` on real packages
//! ([`debs`]) in the host's own package root. Stand-ins (`tests/standins/bin`,
//! first in the host's PATH) for what cannot run here (KESL's
//! `kesl-control`, `mdatp`, rpm/dnf, the apt repositories, systemd) keep
//! their state in the host's folder.
#![allow(dead_code)]

pub mod debs;
pub mod mirror;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{self, Scratch, repo};
use crate::support::sshd::{ClientKey, Host, Sshd, SshdEnv};

/// The EICAR test file (68 bytes; the third character is the letter O).
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The Administration Server the lab's Network Agents report to.
pub const KSC_SERVER: &str = "ksc.northwind.example";

/// What the lab's hosts run: stand-ins first, then the real tools (the
/// sbin folders hold clamd, and what dpkg needs: ldconfig, start-stop-daemon).
const SESSION_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

#[derive(PartialEq)]
enum Family {
    Deb,
    Rpm,
}

pub struct Lab {
    pub env: SshdEnv,
    _servers: Vec<Sshd>,
    pub hosts: Vec<LabHost>,
    pub scratch: Scratch,
    pub mirror: mirror::Mirror,
}

/// One endpoint: its inventory name, its SSH address and its state folder.
pub struct LabHost {
    pub name: String,
    pub ssh: Host,
    pub state: PathBuf,
    pub services: services::Services,
    /// uid/gid of the user the lab's sessions run as (tests run as root).
    owner: Option<(u32, u32)>,
}

impl Drop for Lab {
    /// The real daemons stop before their folders go.
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.services.stop();
        }
    }
}

fn standins() -> PathBuf {
    repo().join("tests/standins/bin")
}

impl Lab {
    /// Hosts named `names`, reachable over SSH, with nothing installed yet.
    pub fn new(names: &[&str]) -> Lab {
        let env = SshdEnv::new();
        let states: Vec<PathBuf> = names.iter().map(|n| env.folder(n)).collect();
        let (servers, ssh) = env.fleet_with(names.len(), |i, _| {
            format!(
                "SetEnv PATH={}:{SESSION_PATH} ORCH_STATE={}",
                standins().display(),
                states[i].display()
            )
        });
        env.trust(&ssh);
        let scratch = Scratch::new();
        let mirror = mirror::Mirror::start(scratch.path());
        let owner = env.owner();
        let hosts = names
            .iter()
            .zip(ssh)
            .zip(states)
            .map(|((name, ssh), state)| {
                std::fs::write(state.join("mirror-url"), &mirror.url).unwrap();
                LabHost {
                    name: name.to_string(),
                    ssh,
                    services: services::Services::start(&state, owner),
                    state,
                    owner,
                }
            })
            .collect();
        Lab {
            env,
            _servers: servers,
            hosts,
            scratch,
            mirror,
        }
    }

    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    /// Makes `host` a Debian endpoint running KESL and Network Agent, whose
    /// KESL excludes `kesl_exclusions` from scans, with KESL's packages
    /// staged for a rollback and Defender's onboarding script at hand.
    pub fn kesl_endpoint(&self, host: &str, kesl_exclusions: &[&str]) {
        self.kesl_endpoint_of(host, kesl_exclusions, Family::Deb);
    }

    /// Like [`Lab::kesl_endpoint`], a RHEL-family endpoint (rpm, dnf).
    pub fn kesl_endpoint_rpm(&self, host: &str, kesl_exclusions: &[&str]) {
        self.kesl_endpoint_of(host, kesl_exclusions, Family::Rpm);
    }

    fn kesl_endpoint_of(&self, host: &str, kesl_exclusions: &[&str], family: Family) {
        let h = self.host(host);
        let root = h.root();
        // The folders clamonacc watches; where scheduled scans go: a
        // Debian host runs systemd, the RHEL-family one only cron (and
        // SELinux, enforcing).
        for dir in ["tmp", "root", "home", "srv", "var/opt/msp/packages/kesl"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        if family == Family::Deb {
            std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
        } else {
            std::fs::create_dir_all(root.join("etc/cron.d")).unwrap();
            std::fs::write(h.state.join("selinux"), "Enforcing\n").unwrap();
        }
        let staged = root.join("var/opt/msp/packages/kesl");
        if family == Family::Deb {
            // Real packages, staged for the rollback too; the agent was
            // installed in silent mode, as KSC's remote install does it.
            let debs = debs::kaspersky_packages(&staged);
            let mut args = vec!["dpkg", "-i"];
            let paths: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
            args.extend(paths.iter().map(String::as_str));
            h.run_with(
                &args,
                &[
                    ("KLNAGENT_SERVER", KSC_SERVER),
                    ("KLNAGENT_AUTOINSTALL", "1"),
                    ("EULA_ACCEPTED", "1"),
                ],
            );
            let answers = root.join("etc/opt/kaspersky/kesl-autoinstall.ini");
            std::fs::create_dir_all(answers.parent().unwrap()).unwrap();
            std::fs::write(&answers, "EULA_AGREED=yes\nPRIVACY_POLICY_AGREED=yes\n").unwrap();
            let setup = root.join("opt/kaspersky/kesl/bin/kesl-setup.pl");
            h.run_with(
                &[
                    setup.to_str().unwrap(),
                    &format!("--autoinstall={}", answers.display()),
                ],
                &[],
            );
        } else {
            h.standin(&["dnf", "install", "-y", "kesl", "klnagent64"]);
            std::fs::write(staged.join("kesl-12.1.0-1234.x86_64.rpm"), "").unwrap();
            std::fs::write(staged.join("klnagent64-15.1.0-20748.x86_64.rpm"), "").unwrap();
        }
        std::fs::write(
            h.state.join("kesl-exclusions"),
            kesl_exclusions.join("\n") + "\n",
        )
        .unwrap();
        let onboarding = root.join("var/opt/msp/packages/mdatp");
        std::fs::create_dir_all(&onboarding).unwrap();
        std::fs::write(
            onboarding.join("MicrosoftDefenderATPOnboardingLinuxServer.py"),
            ONBOARDING_SCRIPT,
        )
        .unwrap();
        std::fs::remove_file(h.state.join("log")).unwrap();
        self.env.give_tree(&h.state);
    }

    /// Writes an inventory of all hosts as client `client`, with the
    /// client's `vars` and settings (`client_extra`, e.g. waves), each host
    /// pointing `playbook`'s path variables into its own folder.
    pub fn inventory(&self, playbook: &str, client: &str, client_extra: Value, vars: Value) {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .map(|h| {
                let mut vars = h.vars_for(playbook);
                vars["clamav_mirror"] = json!(self.mirror.url);
                // Every lab host shares this machine's network: its
                // baseline's ports are those of its own address.
                vars["baseline_ss_filter"] = json!(format!("src {}", h.ssh.address));
                json!({ "name": h.name, "address": h.ssh.address, "port": h.ssh.port,
                        "os": "linux", "vars": vars })
            })
            .collect();
        let mut c = json!({ "vars": vars, "hosts": hosts });
        if let Value::Object(extra) = client_extra {
            c.as_object_mut().unwrap().extend(extra);
        }
        // The playbooks become root with sudo: the login user's password
        // from a secrets folder (scripts/deps/sudo.sh makes the rule).
        let password = self
            .env
            .password()
            .expect("the test user's password (run as root)");
        self.scratch.write("secrets/LAB_SUDO_PASSWORD", &password);
        let inventory = json!({
            "secrets_dir": "secrets",
            "defaults": {
                "transport": "ssh",
                "user": self.env.user(),
                "become": { "method": "sudo", "password_secret": "LAB_SUDO_PASSWORD" },
                "ssh": { "identity_file": self.env.key(ClientKey::Ed25519),
                         "known_hosts": self.env.known_hosts },
            },
            "clients": { client: c },
        });
        // JSON is YAML.
        self.scratch.write(
            "inventory.yml",
            &serde_json::to_string_pretty(&inventory).unwrap(),
        );
    }

    /// `orchestrate run PLAYBOOK -i inventory.yml --report-json report.json ARGS`.
    pub fn run(&self, playbook: &str, args: &[&str]) -> (harness::Run, Value) {
        let path = playbook_path(&self.scratch, playbook);
        let mut all = vec![
            "run",
            path.to_str().unwrap(),
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
        ];
        all.extend_from_slice(args);
        let run = self.scratch.orchestrate(&all);
        let text =
            std::fs::read_to_string(self.scratch.path().join("report.json")).unwrap_or_default();
        let report = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "report.json ({e})\n--- stdout\n{}\n--- stderr\n{}",
                run.stdout, run.stderr
            )
        });
        (run, report)
    }
}

/// A shipped playbook (`playbooks/NAME`), or one the test wrote (`fast:NAME`,
/// see [`fast_copy`]; `scratch:FILE`, see [`with_fault_before_verify`]).
fn playbook_path(scratch: &Scratch, playbook: &str) -> PathBuf {
    if let Some(file) = playbook.strip_prefix("scratch:") {
        return scratch.path().join(file);
    }
    match playbook.strip_prefix("fast:") {
        Some(name) => fast_copy(scratch, name),
        None => repo().join("playbooks").join(playbook),
    }
}

/// The shipped playbook with every `retry_delay` cut to 100ms: a test that
/// makes a step fail for good need not wait out real retry delays. Nothing
/// else changes. The parts it includes from `playbooks/common/` are copied
/// beside it, cut the same way.
fn fast_copy(scratch: &Scratch, name: &str) -> PathBuf {
    let common = repo().join("playbooks/common");
    for entry in std::fs::read_dir(&common).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        scratch.write(&format!("common/{file}"), &fast_text(&text));
    }
    let text = std::fs::read_to_string(repo().join("playbooks").join(name)).unwrap();
    scratch.write(&format!("fast-{name}"), &fast_text(&text))
}

fn fast_text(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("retry_delay:") {
            Some(at) => format!("{}retry_delay: 100ms", &l[..at]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped playbook (fast, as [`fast_copy`], which also copies the
/// parts it includes) with a fault injected between install and verify:
/// `command` runs on the host as the first step of verify (e.g. `systemctl
/// stop clamav-clamonacc`, what an admin or a crash does after the
/// migration said "protected"). Returns the name to pass to [`Lab::run`].
pub fn with_fault_before_verify(lab: &Lab, name: &str, command: &str) -> String {
    fast_copy(&lab.scratch, name);
    let text = std::fs::read_to_string(repo().join("playbooks").join(name)).unwrap();
    let marker = "  - name: verify\n    steps:\n";
    assert!(text.contains(marker), "{name} has a verify phase");
    let step = format!("      - name: (test) fault after install\n        sh: {command}\n");
    let faulty = text.replacen(marker, &format!("{marker}{step}"), 1);
    let file = format!("fault-{name}");
    lab.scratch.write(&file, &fast_text(&faulty));
    format!("scratch:{file}")
}

/// What the fake onboarding script does that the real one does too: write
/// the tenant's onboarding file (here under the host's root).
const ONBOARDING_SCRIPT: &str = r#"import json, os
path = os.path.join(os.environ["ORCH_STATE"], "root/etc/opt/microsoft/mdatp")
os.makedirs(path, exist_ok=True)
with open(os.path.join(path, "mdatp_onboard.json"), "w") as f:
    json.dump({"onboardingInfo": "{\"orgId\": \"00000000-0000-4000-8000-0000000000aa\"}"}, f)
print("Generating /etc/opt/microsoft/mdatp/mdatp_onboard.json ...")
"#;

impl LabHost {
    /// The host's file tree, where the playbooks' paths point.
    pub fn root(&self) -> PathBuf {
        self.state.join("root")
    }

    /// A file under the host's root (`etc/clamav/clamd.conf`), or "".
    pub fn file(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root().join(relative)).unwrap_or_default()
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.root().join(relative).exists()
    }

    /// Whether `package` is installed: in the host's real dpkg database,
    /// or for the stand-in package managers (apt's repository, rpm).
    pub fn installed(&self, package: &str) -> bool {
        let status = Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                self.root().join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f=${Status}", package])
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout).ends_with(" installed")
            || self.state.join("pkgs").join(package).exists()
    }

    /// Whether `unit` runs: a real ClamAV daemon, or a stand-in unit.
    pub fn running(&self, unit: &str) -> bool {
        if services::REAL_UNITS.contains(&unit) {
            self.services.is_running(unit)
        } else {
            self.state.join("active").join(unit).exists()
        }
    }

    /// Writes EICAR to `relative` (under the host's root) and reads it back,
    /// both as the user the lab's sessions run as (not root, not clamd's
    /// user); the read's error, if it was refused.
    pub fn eicar_read_by_another_user(&self, relative: &str) -> Result<(), String> {
        let path = self.root().join(relative);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"printf '%s' "$1" > "$2" && cat "$2" > /dev/null"#)
            .arg("sh")
            .arg(EICAR)
            .arg(&path);
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let out = command.output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Injects a failure or a condition (`fail-install`, `rtp-off`, ...).
    pub fn inject(&self, name: &str) {
        std::fs::write(self.state.join(name), "").unwrap();
    }

    /// A state file of the stand-ins (`mdatp/exclusions`), or "".
    pub fn state_file(&self, relative: &str) -> String {
        std::fs::read_to_string(self.state.join(relative)).unwrap_or_default()
    }

    /// Runs a stand-in here, as the test (to set a host up).
    pub fn standin(&self, args: &[&str]) -> String {
        run_standin(&self.state, args)
    }

    /// Runs `args[0]` (a stand-in's name, or a path) with the host's PATH,
    /// its state folder and `env`, as the test (to set a host up).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        run_in_host(&self.state, args, env)
    }

    /// The playbook's path variables pointed into this host's root; the
    /// rest set as a test lab needs them.
    pub fn vars_for(&self, playbook: &str) -> Value {
        let mut vars = rooted_path_vars(playbook, &self.root());
        let obj = vars.as_object_mut().unwrap();
        obj.insert("min_memory_mb".into(), json!(64));
        // The KSC server the lab's Network Agent was installed for.
        obj.insert("klnagent_server".into(), json!(KSC_SERVER));
        // Short waits: a hung clamd must fail fast in a test.
        obj.insert("clamd_answer_seconds".into(), json!(3));
        obj.insert(
            "kesl_rollback_dir".into(),
            json!(self.root().join("var/opt/msp/packages/kesl")),
        );
        vars
    }
}

/// Runs a stand-in from `tests/standins/bin` with `ORCH_STATE=state`.
pub fn run_standin(state: &Path, args: &[&str]) -> String {
    let program = standins().join(args[0]).display().to_string();
    let mut all = vec![program.as_str()];
    all.extend_from_slice(&args[1..]);
    run_in_host(state, &all, &[])
}

/// Runs `args` as a host's session would (its PATH: stand-ins first, so
/// that maintainer scripts reach the stand-in systemctl, never the test
/// machine's), with `env`.
fn run_in_host(state: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("PATH", format!("{}:{SESSION_PATH}", standins().display()))
        .env("ORCH_STATE", state)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `vars` entry of a shipped playbook that is an absolute path (or a
/// list of them), with `root` put in front.
pub fn rooted_path_vars(playbook: &str, root: &Path) -> Value {
    let text = std::fs::read_to_string(repo().join("playbooks").join(playbook)).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let rooted = |v: &Value| -> Option<Value> {
        let s = v.as_str()?;
        s.starts_with('/')
            .then(|| json!(format!("{}{s}", root.display())))
    };
    let mut out = serde_json::Map::new();
    for (name, value) in doc["vars"].as_object().unwrap() {
        if let Some(r) = rooted(value) {
            out.insert(name.clone(), r);
        } else if let Some(items) = value.as_array() {
            let all: Option<Vec<Value>> = items.iter().map(rooted).collect();
            if let Some(all) = all.filter(|a| !a.is_empty()) {
                out.insert(name.clone(), Value::Array(all));
            }
        }
    }
    Value::Object(out)
}

/// The report's entry for host `name`.
pub fn host_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hosts"].as_array().unwrap())
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} in the report: {report:#}"))
}

/// The host stopped in precheck: no step of a later phase ran.
pub fn assert_only_precheck_ran(host: &Value) {
    assert!(
        host["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["phase"] == "precheck"),
        "nothing after the precheck ran: {host:#}"
    );
}

/// The report's record of step `step` on a host.
pub fn step<'a>(host: &'a Value, name: &str) -> &'a Value {
    host["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("step `{name}` in {host:#}"))
}

/// `orchestrate run PLAYBOOK -i INVENTORY --dry-run --format json` in `dir`.
pub fn plan(dir: &std::path::Path, playbook: &str, inventory: &str) -> Value {
    let playbook = repo().join("playbooks").join(playbook);
    let args = [
        "run",
        playbook.to_str().unwrap(),
        "-i",
        inventory,
        "--dry-run",
        "--format",
        "json",
    ];
    harness::Run::new(harness::orchestrate_in(dir, &args, &[]))
        .expect_code(0)
        .json()
}

pub fn planned_step<'a>(host: &'a Value, name: &str) -> &'a Value {
    host["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("step `{name}` planned: {host:#}"))
}

pub fn sh(script: &str, env: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(script);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}
