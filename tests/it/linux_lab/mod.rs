//! A lab of Linux endpoints for the shipped Linux playbooks: real OpenSSH
//! servers on loopback (one address per host), each host with a folder of
//! its own where the stand-in security products and package tools
//! (`tests/standins/bin`, first in the host's PATH) keep their state, and
//! where the playbooks' path variables are pointed (`root/...`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{self, Scratch, repo};
use crate::support::sshd::{ClientKey, Host, Sshd, SshdEnv};

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
}

/// One endpoint: its inventory name, its SSH address and its state folder.
pub struct LabHost {
    pub name: String,
    pub ssh: Host,
    pub state: PathBuf,
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
                "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin ORCH_STATE={}",
                standins().display(),
                states[i].display()
            )
        });
        env.trust(&ssh);
        let hosts = names
            .iter()
            .zip(ssh)
            .zip(states)
            .map(|((name, ssh), state)| LabHost {
                name: name.to_string(),
                ssh,
                state,
            })
            .collect();
        Lab {
            env,
            _servers: servers,
            hosts,
            scratch: Scratch::new(),
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
        for dir in ["tmp", "root", "var/opt/msp/packages/kesl"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let staged = root.join("var/opt/msp/packages/kesl");
        if family == Family::Deb {
            std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
            std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
            h.standin(&["apt-get", "install", "-y", "kesl", "klnagent64"]);
            std::fs::write(staged.join("kesl_12.1.0-1234_amd64.deb"), "").unwrap();
            std::fs::write(staged.join("klnagent64_15.1.0-20748_amd64.deb"), "").unwrap();
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
                json!({ "name": h.name, "address": h.ssh.address, "port": h.ssh.port,
                        "os": "linux", "vars": h.vars_for(playbook) })
            })
            .collect();
        let mut c = json!({ "vars": vars, "hosts": hosts });
        if let Value::Object(extra) = client_extra {
            c.as_object_mut().unwrap().extend(extra);
        }
        let inventory = json!({
            "defaults": {
                "transport": "ssh",
                "user": self.env.user(),
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
/// see [`fast_copy`]).
fn playbook_path(scratch: &Scratch, playbook: &str) -> PathBuf {
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
    let fast = |path: &Path| -> String {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| match l.find("retry_delay:") {
                Some(at) => format!("{}retry_delay: 100ms", &l[..at]),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let common = repo().join("playbooks/common");
    for entry in std::fs::read_dir(&common).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        scratch.write(&format!("common/{file}"), &fast(&path));
    }
    scratch.write(
        &format!("fast-{name}"),
        &fast(&repo().join("playbooks").join(name)),
    )
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

    /// Whether the stand-in package manager has `package` installed.
    pub fn installed(&self, package: &str) -> bool {
        self.state.join("pkgs").join(package).exists()
    }

    /// Whether the stand-in systemd runs `unit`.
    pub fn running(&self, unit: &str) -> bool {
        self.state.join("active").join(unit).exists()
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

    /// The playbook's path variables pointed into this host's root; the
    /// rest set as a test lab needs them.
    pub fn vars_for(&self, playbook: &str) -> Value {
        let mut vars = rooted_path_vars(playbook, &self.root());
        let obj = vars.as_object_mut().unwrap();
        obj.insert("min_memory_mb".into(), json!(64));
        obj.insert(
            "kesl_rollback_dir".into(),
            json!(self.root().join("var/opt/msp/packages/kesl")),
        );
        vars
    }
}

/// Runs a stand-in from `tests/standins/bin` with `ORCH_STATE=state`.
pub fn run_standin(state: &Path, args: &[&str]) -> String {
    let out = Command::new(standins().join(args[0]))
        .args(&args[1..])
        .env("ORCH_STATE", state)
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
