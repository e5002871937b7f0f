//! The simulated endpoints: who they are, what state each is in, and what
//! each answers to a script. No I/O here: the [`super::simulator`] carries
//! the answers over SSH.
//!
//! Everything random is a pure function of the seed and names (a host's
//! name, an answer's place, the host's command count), never of time or
//! of the order in which hosts happen to run, so one seed gives one run
//! however the scheduler interleaves hosts.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::files::HostFiles;
use super::scenario::{FaultKind, Scenario};
use super::wire;
use crate::transport::Os;

/// A number in [0, 1) drawn from the seed and `parts`.
pub fn draw(seed: u64, parts: &[&str]) -> f64 {
    let mut hash = Sha256::new();
    hash.update(seed.to_le_bytes());
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let bytes = hash.finalize();
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// One simulated host, as set up for the rehearsal.
pub struct Endpoint {
    pub name: String,
    pub os: Os,
    pub address: Ipv4Addr,
    /// Round trip added to every exchange with this host.
    pub rtt: Duration,
    /// The phase (index into [`Fleet::phases`]) whose first step fails here.
    pub fail_phase: Option<usize>,
    /// Indexes of the scenario's faults that strike this host.
    pub faults: Vec<usize>,
    pub state: Mutex<HostState>,
}

/// What changes on a host while the rehearsal runs.
pub struct HostState {
    /// Times each answer (block, entry) has been given.
    used: HashMap<(usize, usize), u32>,
    /// Times each fault has struck.
    struck: HashMap<usize, u32>,
    commands: u64,
    /// The step (signature) the fail rate chose to fail, once chosen.
    failing: Option<usize>,
    down: Down,
    /// Cancelled when the host goes down: every connection to it ends.
    pub alive: CancellationToken,
    /// What the host knows of the files written to it (over SFTP); they
    /// outlive a reboot, as files on disk do.
    pub files: HostFiles,
}

#[derive(Clone, Copy)]
enum Down {
    No,
    Until(Instant),
    Forever,
}

/// What the endpoint does with one script.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
    pub latency: Duration,
    pub after: After,
}

/// What happens beyond the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum After {
    Nothing,
    /// Output this many bytes before the exit status.
    Flood(u64),
    /// Cut the connection before the exit status.
    Drop,
    /// Go down (closing every connection) once the exit status is sent;
    /// back after the duration, or never.
    Reboot(Option<Duration>),
}

/// What a new connection to a host meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    Serve,
    Refuse,
    Stall,
}

/// Steps recognised by the literal text of their templates.
pub struct Signatures {
    matcher: Option<aho_corasick::AhoCorasick>,
    /// Per pattern: the phase index.
    phase_of: Vec<usize>,
}

impl Signatures {
    /// `patterns`: (literal text, phase index).
    pub fn new(patterns: Vec<(String, usize)>) -> Signatures {
        // A contiguous NFA, not the DFA the builder picks for few patterns:
        // the playbook's step texts are long, and a DFA of them took 7 MB.
        let matcher = aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            .build(patterns.iter().map(|(p, _)| p.as_str()))
            .ok();
        Signatures {
            matcher,
            phase_of: patterns.into_iter().map(|(_, phase)| phase).collect(),
        }
    }

    /// The step a script belongs to: the longest signature in it.
    fn find(&self, script: &str) -> Option<usize> {
        let matcher = self.matcher.as_ref()?;
        matcher
            .find_overlapping_iter(script)
            .max_by_key(|m| (m.len(), std::cmp::Reverse(m.pattern().as_usize())))
            .map(|m| m.pattern().as_usize())
    }
}

/// The whole simulated fleet.
pub struct Fleet {
    pub seed: u64,
    pub time_scale: f64,
    pub scenario: Scenario,
    /// With no scenario every script succeeds, silently.
    pub answer_everything: bool,
    pub phases: Vec<String>,
    pub signatures: Signatures,
    pub endpoints: Vec<Endpoint>,
    pub by_address: HashMap<Ipv4Addr, usize>,
}

/// A host to simulate.
pub struct Spec {
    pub name: String,
    pub client: String,
    pub os: Os,
    pub address: Ipv4Addr,
}

impl Fleet {
    /// Sets up `hosts`. `rates` are the fail rates of `phases`, in order:
    /// the share of hosts whose first step in that phase fails.
    pub fn new(
        seed: u64,
        time_scale: f64,
        scenario: Option<Scenario>,
        rates: Vec<f64>,
        phases: Vec<String>,
        signatures: Signatures,
        hosts: Vec<Spec>,
    ) -> Arc<Fleet> {
        let answer_everything = scenario.is_none();
        let scenario = scenario.unwrap_or_default();
        let endpoints: Vec<Endpoint> = hosts
            .into_iter()
            .map(|spec| {
                let u = draw(seed, &["fail", &spec.name]);
                let mut sum = 0.0;
                let fail_phase = rates.iter().position(|r| {
                    sum += r;
                    u < sum
                });
                let faults = scenario
                    .faults
                    .iter()
                    .enumerate()
                    .filter(|(i, f)| {
                        f.hosts.as_ref().is_none_or(|g| g.is_match(&spec.name))
                            && f.share.is_none_or(|s| {
                                draw(seed, &["fault", &i.to_string(), &spec.name]) < s
                            })
                    })
                    .map(|(i, _)| i)
                    .collect();
                let rtt = scenario
                    .client_rtt
                    .get(&spec.client)
                    .copied()
                    .unwrap_or(scenario.rtt);
                Endpoint {
                    name: spec.name,
                    os: spec.os,
                    address: spec.address,
                    rtt,
                    fail_phase,
                    faults,
                    state: Mutex::new(HostState {
                        used: HashMap::new(),
                        struck: HashMap::new(),
                        commands: 0,
                        failing: None,
                        down: Down::No,
                        alive: CancellationToken::new(),
                        files: HostFiles::default(),
                    }),
                }
            })
            .collect();
        let by_address = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.address, i))
            .collect();
        Arc::new(Fleet {
            seed,
            time_scale,
            scenario,
            answer_everything,
            phases,
            signatures,
            endpoints,
            by_address,
        })
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }

    /// Whether `fault` may strike `host` once more, counting it if so.
    /// Connection faults strike every time unless `times` says otherwise;
    /// command faults strike once unless it says otherwise.
    fn strike(&self, state: &mut HostState, fault: usize) -> bool {
        let f = &self.scenario.faults[fault];
        // A full disk stays full too.
        let connection = matches!(
            f.kind,
            FaultKind::Refuse | FaultKind::StallHandshake | FaultKind::DiskFull
        );
        let limit = f.times.or((!connection).then_some(1));
        let count = state.struck.entry(fault).or_default();
        if limit.is_some_and(|l| *count >= l) {
            return false;
        }
        *count += 1;
        true
    }

    /// What a new connection to host `index` meets, and the token that
    /// ends it when the host goes down.
    pub fn greet(&self, index: usize) -> (Greeting, CancellationToken) {
        let host = &self.endpoints[index];
        let mut state = host.state.lock().expect("host state");
        match state.down {
            Down::Forever => return (Greeting::Refuse, state.alive.clone()),
            Down::Until(t) if Instant::now() < t => {
                return (Greeting::Refuse, state.alive.clone());
            }
            Down::Until(_) => {
                state.down = Down::No;
                state.alive = CancellationToken::new();
            }
            Down::No => {}
        }
        for &fault in &host.faults {
            let kind = self.scenario.faults[fault].kind;
            let greeting = match kind {
                FaultKind::Refuse => Greeting::Refuse,
                FaultKind::StallHandshake => Greeting::Stall,
                _ => continue,
            };
            if self.strike(&mut state, fault) {
                return (greeting, state.alive.clone());
            }
        }
        (Greeting::Serve, state.alive.clone())
    }

    /// Takes host `index` down now (its connections end), for `back_after`
    /// or for good.
    pub fn go_down(&self, index: usize, back_after: Option<Duration>) {
        let mut state = self.endpoints[index].state.lock().expect("host state");
        state.down = match back_after {
            Some(d) => Down::Until(Instant::now() + d),
            None => Down::Forever,
        };
        state.alive.cancel();
    }

    /// Whether a `disk_full` fault refuses a write to host `index` now
    /// (counted: it strikes every write, or the first `times`).
    pub fn disk_full(&self, index: usize) -> bool {
        let host = &self.endpoints[index];
        let mut state = host.state.lock().expect("host state");
        host.faults.iter().any(|&fault| {
            self.scenario.faults[fault].kind == FaultKind::DiskFull
                && self.strike(&mut state, fault)
        })
    }

    /// The answer of host `index` to `script`.
    pub fn answer(&self, index: usize, script: &str) -> Reply {
        let host = &self.endpoints[index];
        let mut state = host.state.lock().expect("host state");
        state.commands += 1;
        let mut reply = Reply {
            stdout: String::new(),
            stderr: String::new(),
            exit: 0,
            latency: Duration::ZERO,
            after: After::Nothing,
        };
        if wire::is_housekeeping(script) {
            return reply;
        }
        // The transport's own file scripts (an upload's check, a `become`
        // upload's move, the run of a copy never sent), answered from the
        // files the host was sent, never from the scenario.
        if let Some((exit, stderr)) = state.files.answer(host.os, script) {
            (reply.exit, reply.stderr) = (exit, stderr);
            return reply;
        }
        if wire::is_reboot(script) {
            // A `reboot` fault without `match` changes how this host's
            // reboots go: back after its own delay, or never.
            let mut back = Some(self.scaled(self.scenario.reboot_takes));
            for &fault in &host.faults {
                let f = &self.scenario.faults[fault];
                if f.kind == FaultKind::Reboot
                    && f.pattern.is_none()
                    && self.strike(&mut state, fault)
                {
                    back = f.back_after.map(|d| self.scaled(d));
                    break;
                }
            }
            reply.after = After::Reboot(back);
            return reply;
        }
        let step = self.signatures.find(script);
        // The fail rate: the host's first step of its failing phase fails,
        // and so does every retry of that step.
        if let (Some(phase), Some(step)) = (host.fail_phase, step)
            && self.signatures.phase_of[step] == phase
            && state.failing.is_none_or(|s| s == step)
        {
            state.failing = Some(step);
            reply.exit = if host.os == Os::Windows { 1603 } else { 1 };
            reply.stderr = format!(
                "rehearsal: simulated failure (fail rate of phase {})\n",
                self.phases[phase]
            );
            return reply;
        }
        match self.scripted(host, &mut state, script) {
            Some(answer) => reply = answer,
            None if self.answer_everything => {}
            None => {
                let first = script.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let first: String = first.trim().chars().take(120).collect();
                reply.exit = 127;
                reply.stderr = format!("rehearsal: no answer in the scenario for: {first}\n");
            }
        }
        for &fault in &host.faults {
            let f = &self.scenario.faults[fault];
            let after = match f.kind {
                FaultKind::DropMidCommand => After::Drop,
                FaultKind::FloodOutput => After::Flood(f.bytes),
                // Without `match`, a reboot fault acts on the host's reboots (above).
                FaultKind::Reboot if f.pattern.is_some() => {
                    After::Reboot(f.back_after.map(|d| self.scaled(d)))
                }
                FaultKind::Reboot
                | FaultKind::Refuse
                | FaultKind::StallHandshake
                | FaultKind::DiskFull => continue,
            };
            if f.pattern.as_ref().is_none_or(|p| p.is_match(script))
                && self.strike(&mut state, fault)
            {
                reply.after = after;
                break;
            }
        }
        reply
    }

    /// The scenario's answer, if an entry matches.
    fn scripted(&self, host: &Endpoint, state: &mut HostState, script: &str) -> Option<Reply> {
        for (b, block) in self.scenario.blocks.iter().enumerate() {
            if !block.applies(host.os, &host.name) {
                continue;
            }
            for (i, answer) in block.commands.iter().enumerate() {
                if !answer.pattern.is_match(script) {
                    continue;
                }
                if let Some(share) = answer.share
                    && draw(
                        self.seed,
                        &["share", &b.to_string(), &i.to_string(), &host.name],
                    ) >= share
                {
                    continue;
                }
                let used = state.used.entry((b, i)).or_default();
                if answer.times.is_some_and(|t| *used >= t) {
                    continue;
                }
                *used += 1;
                let u = draw(
                    self.seed,
                    &["latency", &host.name, &state.commands.to_string()],
                );
                return Some(Reply {
                    stdout: answer.stdout.clone(),
                    stderr: answer.stderr.clone(),
                    exit: answer.exit,
                    latency: self.scaled(answer.latency.at(u)),
                    after: After::Nothing,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::SourceFile;

    fn fleet(scenario: &str, rates: Vec<f64>, hosts: usize) -> Arc<Fleet> {
        let scenario =
            super::super::scenario::parse_scenario(&SourceFile::from_text("s.yml", scenario))
                .unwrap();
        let specs = (0..hosts)
            .map(|i| Spec {
                name: format!("h{i:03}"),
                client: "c".into(),
                os: Os::Windows,
                address: Ipv4Addr::new(127, 9, 0, i as u8 + 1),
            })
            .collect();
        Fleet::new(
            7,
            1.0,
            Some(scenario),
            rates,
            vec!["precheck".into(), "uninstall".into()],
            Signatures::new(vec![("find KES".into(), 0), ("msiexec /x".into(), 1)]),
            specs,
        )
    }

    #[test]
    fn answers_come_from_the_first_matching_entry_and_unknown_scripts_fail_loudly() {
        let f = fleet(
            "hosts:\n  - commands:\n      - { match: 'msiexec', stdout: removed, exit: 3010, times: 1 }\n      - { match: 'msiexec', exit: 1605 }\n",
            vec![0.0, 0.0],
            1,
        );
        assert_eq!(f.answer(0, "msiexec /x {A}").exit, 3010);
        assert_eq!(f.answer(0, "msiexec /x {A}").exit, 1605);
        let unknown = f.answer(0, "Get-Thing\n");
        assert_eq!(unknown.exit, 127);
        assert!(unknown.stderr.contains("Get-Thing"), "{}", unknown.stderr);
    }

    #[test]
    fn a_fail_rate_fails_that_share_of_hosts_in_their_phase_the_same_for_one_seed() {
        let f = fleet("hosts: []\n", vec![0.25, 0.25], 200);
        let failing: Vec<usize> = (0..200)
            .filter(|&i| f.endpoints[i].fail_phase.is_some())
            .collect();
        assert!((70..130).contains(&failing.len()), "{}", failing.len());
        let again = fleet("hosts: []\n", vec![0.25, 0.25], 200);
        assert!(
            failing
                .iter()
                .all(|&i| again.endpoints[i].fail_phase.is_some())
        );
        let host = failing[0];
        let phase = f.endpoints[host].fail_phase.unwrap();
        let script = ["find KES", "msiexec /x {A}"][phase];
        assert_ne!(f.answer(host, script).exit, 0);
        assert_ne!(f.answer(host, script).exit, 0, "a retry fails too");
    }

    #[test]
    fn a_reboot_takes_the_host_down_and_it_comes_back_or_not() {
        let f = fleet(
            "reboot_takes: 0s\nfaults:\n  - { kind: reboot, hosts: 'h001', match: 'msiexec', back_after: never }\n",
            vec![0.0, 0.0],
            2,
        );
        assert_eq!(
            f.answer(0, "shutdown /r /t 0").after,
            After::Reboot(Some(Duration::ZERO))
        );
        f.go_down(0, Some(Duration::ZERO));
        assert_eq!(f.greet(0).0, Greeting::Serve);
        let reply = f.answer(1, "msiexec /x");
        assert_eq!(reply.after, After::Reboot(None));
        f.go_down(1, None);
        assert_eq!(f.greet(1).0, Greeting::Refuse);
    }
}
