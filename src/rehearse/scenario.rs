//! Rehearsal scenarios: what the simulated fleet answers, and how it
//! misbehaves, as one YAML file.
//!
//! ```yaml
//! rtt: 2ms                         # round trip added to every exchange
//! clients: { acme-dental: { rtt: 50ms } }
//! fail_rates: { uninstall: 0.02 }  # share of hosts failing in that phase
//! reboot_takes: 5s                 # how long a simulated reboot is down
//! hosts:                           # blocks tried in order; a host uses every
//!   - os: windows                  # block whose os and name glob match it
//!     name: "acme-*"
//!     commands:                    # the first entry whose regex matches answers
//!       - match: 'Get-MpComputerStatus'
//!         stdout: '{"AntivirusEnabled": true}'
//!         exit: 0
//!         latency: { min: 20ms, max: 80ms }
//!         share: 0.1               # only this (seeded) share of hosts
//!         times: 1                 # only the first N matches per host
//! faults:
//!   - { kind: refuse, hosts: "acme-ws02" }
//!   - { kind: reboot, share: 0.05, match: 'msiexec', back_after: never }
//!   - { kind: disk_full, hosts: "acme-fs*" }  # uploads' writes fail
//! ```
//!
//! Patterns are regular expressions searched in the script the controller
//! sent (the text, not the encoded wire form). A `script:` step's run is
//! matched like any command, by the text that runs its uploaded copy: the
//! copy's path (`/tmp/orchestrate-UNIQUE-NAME`, `C:\Windows\Temp\...`),
//! which ends in the script's file name, then its arguments, except on
//! Linux and macOS for a shell script, whose arguments go inside its copy
//! (see `transport::script_args`). So `match: 'install-agent\.sh'`
//! answers it. Not its contents: the simulator keeps only the size and
//! hash of what is uploaded, and the copy travels over SFTP, not stdin.
//! Uploads themselves, and the transport's check of each copy, are never
//! matched: the simulated host answers them from what it was sent.
//!
//! A script that no entry answers exits 127 and says so, the way the WinRM
//! test endpoint's tables do, so a scenario that misses a step fails
//! loudly rather than passing a rehearsal that means nothing. Loaded with
//! serde-saphyr like the playbook; every error names file, line and
//! column.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::load::{HumanDuration, InputError, InputErrors, SourceFile};
use crate::transport::Os;

/// A scenario, checked and compiled.
#[derive(Debug, Default, Clone)]
pub struct Scenario {
    pub rtt: Duration,
    pub client_rtt: IndexMap<String, Duration>,
    /// Phase name → share of hosts whose first step in that phase fails.
    pub fail_rates: IndexMap<String, f64>,
    pub reboot_takes: Duration,
    pub blocks: Vec<HostBlock>,
    pub faults: Vec<Fault>,
}

/// Answers for the hosts an OS and a name glob select.
#[derive(Debug, Clone)]
pub struct HostBlock {
    pub os: Option<Os>,
    pub name: Option<globset::GlobMatcher>,
    pub commands: Vec<Answer>,
}

impl HostBlock {
    pub fn applies(&self, os: Os, name: &str) -> bool {
        self.os.is_none_or(|o| o == os) && self.name.as_ref().is_none_or(|g| g.is_match(name))
    }
}

/// One canned answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Names the entry in the simulator's trace: its pattern.
    pub pattern: regex::Regex,
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
    pub latency: Latency,
    pub share: Option<f64>,
    pub times: Option<u32>,
}

/// How long a command takes on the endpoint: fixed, or uniform in a range.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub min: Duration,
    pub max: Duration,
}

impl Latency {
    /// The latency for a draw `u` in [0, 1).
    pub fn at(&self, u: f64) -> Duration {
        let span = self.max.saturating_sub(self.min);
        self.min + span.mul_f64(u.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The TCP connection is closed as soon as it is accepted.
    Refuse,
    /// The connection is accepted and nothing is ever said.
    StallHandshake,
    /// The connection is cut while the matching command runs.
    DropMidCommand,
    /// The matching command writes `bytes` of output before it ends.
    FloodOutput,
    /// The matching command reboots the host: it is down for `back_after`,
    /// or for good.
    Reboot,
    /// Every write of an upload fails as a full disk fails it (`ENOSPC`,
    /// which OpenSSH's SFTP server reports as a bare `Failure`), or the
    /// first `times`.
    DiskFull,
}

/// A fault and the hosts it strikes.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub hosts: Option<globset::GlobMatcher>,
    pub share: Option<f64>,
    /// For faults that strike a command: which one (default: the first).
    pub pattern: Option<regex::Regex>,
    pub bytes: u64,
    /// How many times it strikes a host (default: every connection for
    /// `refuse` and `stall_handshake`, every write for `disk_full`, once
    /// for the others).
    pub times: Option<u32>,
    /// `None`: the host never comes back.
    pub back_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioDoc {
    #[serde(default)]
    rtt: Option<HumanDuration>,
    #[serde(default)]
    clients: IndexMap<String, ClientDoc>,
    #[serde(default)]
    fail_rates: IndexMap<String, Spanned<f64>>,
    #[serde(default)]
    reboot_takes: Option<HumanDuration>,
    #[serde(default)]
    hosts: Vec<BlockDoc>,
    #[serde(default)]
    faults: Vec<Spanned<FaultDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientDoc {
    rtt: HumanDuration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDoc {
    #[serde(default)]
    os: Option<Os>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    commands: Vec<AnswerDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerDoc {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    exit: i32,
    #[serde(default)]
    latency: Option<LatencyDoc>,
    #[serde(default)]
    share: Option<Spanned<f64>>,
    #[serde(default)]
    times: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LatencyDoc {
    Fixed(HumanDuration),
    Range {
        min: HumanDuration,
        max: HumanDuration,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultDoc {
    kind: FaultKind,
    #[serde(default)]
    hosts: Option<Spanned<String>>,
    #[serde(default)]
    share: Option<Spanned<f64>>,
    #[serde(default, rename = "match")]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    back_after: Option<BackAfterDoc>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BackAfterDoc {
    After(HumanDuration),
    Never(Never),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Never {
    Never,
}

/// Default output of a flood: 64 MiB, far past what the controller keeps.
const FLOOD_BYTES: u64 = 64 << 20;

/// Reads and checks a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, InputErrors> {
    let source = SourceFile::read(path).map_err(|e| InputErrors(vec![e]))?;
    parse_scenario(&source)
}

/// Checks a scenario's text (`source` names it in errors).
pub fn parse_scenario(source: &SourceFile) -> Result<Scenario, InputErrors> {
    let doc: ScenarioDoc = crate::load::parse_yaml(source).map_err(|e| InputErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut scenario = Scenario {
        rtt: doc.rtt.map(|d| d.0).unwrap_or_default(),
        client_rtt: doc.clients.into_iter().map(|(k, v)| (k, v.rtt.0)).collect(),
        reboot_takes: doc
            .reboot_takes
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(2)),
        ..Scenario::default()
    };
    for (phase, rate) in doc.fail_rates {
        if let Some(rate) = share(source, &rate, &mut errors) {
            scenario.fail_rates.insert(phase, rate);
        }
    }
    for block in doc.hosts {
        let name = block.name.and_then(|n| glob(source, &n, &mut errors));
        let mut commands = Vec::new();
        for answer in block.commands {
            let Some(pattern) = regex(source, &answer.pattern, &mut errors) else {
                continue;
            };
            let latency = match answer.latency {
                None => Latency::default(),
                Some(LatencyDoc::Fixed(d)) => Latency { min: d.0, max: d.0 },
                Some(LatencyDoc::Range { min, max }) if min.0 <= max.0 => Latency {
                    min: min.0,
                    max: max.0,
                },
                Some(LatencyDoc::Range { .. }) => {
                    errors.push(source.error_at_location(
                        &answer.pattern.referenced,
                        "this answer's latency has a min above its max",
                    ));
                    Latency::default()
                }
            };
            commands.push(Answer {
                pattern,
                stdout: answer.stdout,
                stderr: answer.stderr,
                exit: answer.exit,
                latency,
                share: answer
                    .share
                    .as_ref()
                    .and_then(|s| share(source, s, &mut errors)),
                times: answer.times,
            });
        }
        scenario.blocks.push(HostBlock {
            os: block.os,
            name,
            commands,
        });
    }
    for fault in doc.faults {
        let at = fault.referenced;
        let f = fault.value;
        if f.hosts.is_none() && f.share.is_none() {
            errors.push(source.error_at_location(
                &at,
                "a fault needs `hosts` (a name glob) or `share` (a share of hosts), or both",
            ));
        }
        if let Some(pattern) = &f.pattern
            && matches!(
                f.kind,
                FaultKind::Refuse | FaultKind::StallHandshake | FaultKind::DiskFull
            )
        {
            errors.push(source.error_at_location(
                &pattern.referenced,
                "`match` picks the command a fault strikes; `refuse`, `stall_handshake` and `disk_full` strike connections and writes, not commands: narrow them with `hosts` or `share`",
            ));
        }
        scenario.faults.push(Fault {
            kind: f.kind,
            hosts: f.hosts.and_then(|h| glob(source, &h, &mut errors)),
            share: f.share.as_ref().and_then(|s| share(source, s, &mut errors)),
            pattern: f.pattern.and_then(|p| regex(source, &p, &mut errors)),
            bytes: f.bytes.unwrap_or(FLOOD_BYTES),
            times: f.times,
            back_after: match f.back_after {
                None => Some(scenario.reboot_takes),
                Some(BackAfterDoc::After(d)) => Some(d.0),
                Some(BackAfterDoc::Never(Never::Never)) => None,
            },
        });
    }
    if errors.is_empty() {
        Ok(scenario)
    } else {
        Err(InputErrors(errors))
    }
}

fn share(source: &SourceFile, value: &Spanned<f64>, errors: &mut Vec<InputError>) -> Option<f64> {
    if (0.0..=1.0).contains(&value.value) {
        Some(value.value)
    } else {
        errors.push(source.error_at_location(
            &value.referenced,
            format!(
                "{} is not a share of hosts; write a number from 0 to 1 (0.05 is 5 %)",
                value.value
            ),
        ));
        None
    }
}

fn regex(
    source: &SourceFile,
    text: &Spanned<String>,
    errors: &mut Vec<InputError>,
) -> Option<regex::Regex> {
    match regex::RegexBuilder::new(&text.value)
        .multi_line(true)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or(&why).trim().to_string();
            errors.push(source.error_at_location(
                &text.referenced,
                format!("`{}` is not a regular expression: {last}", text.value),
            ));
            None
        }
    }
}

fn glob(
    source: &SourceFile,
    text: &Spanned<String>,
    errors: &mut Vec<InputError>,
) -> Option<globset::GlobMatcher> {
    match globset::Glob::new(&text.value) {
        Ok(g) => Some(g.compile_matcher()),
        Err(e) => {
            errors.push(source.error_at_location(
                &text.referenced,
                format!("`{}` is not a host name glob: {e}", text.value),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        parse_scenario(&SourceFile::from_text("s.yml", text)).map_err(|e| {
            e.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn a_scenario_reads_answers_rates_and_faults() {
        let s = parse(
            "rtt: 50ms\nfail_rates: { uninstall: 0.02 }\nhosts:\n  - os: windows\n    commands:\n      - { match: 'msiexec', exit: 3010, share: 0.1, latency: { min: 1s, max: 2s } }\nfaults:\n  - { kind: reboot, hosts: 'ws*', back_after: never }\n",
        )
        .unwrap();
        assert_eq!(s.rtt, Duration::from_millis(50));
        assert_eq!(s.fail_rates["uninstall"], 0.02);
        let answer = &s.blocks[0].commands[0];
        assert_eq!((answer.exit, answer.share), (3010, Some(0.1)));
        assert_eq!(answer.latency.at(0.5), Duration::from_millis(1500));
        assert!(s.blocks[0].applies(Os::Windows, "x") && !s.blocks[0].applies(Os::Linux, "x"));
        assert_eq!(s.faults[0].back_after, None);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("hosts:\n  - commands:\n      - match: 'a(('\n").unwrap_err();
        assert!(e.starts_with("s.yml:3:"), "{e}");
        assert!(e.contains("not a regular expression"), "{e}");
        let e = parse("fail_rates: { install: 5 }\n").unwrap_err();
        assert!(
            e.starts_with("s.yml:1:") && e.contains("0.05 is 5 %"),
            "{e}"
        );
        let e = parse("rt: 5ms\n").unwrap_err();
        assert!(e.starts_with("s.yml:1:1:"), "{e}");
        // A `match` the fault would ignore is an error, not a silent widening.
        let e =
            parse("faults:\n  - kind: disk_full\n    hosts: 'l*'\n    match: 'kes'\n").unwrap_err();
        assert!(e.starts_with("s.yml:4:"), "{e}");
        assert!(e.contains("strike connections and writes"), "{e}");
    }
}
