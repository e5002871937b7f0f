//! Turning a real plan into a rehearsal's: time scaled, every host pointed
//! at the simulator, and the simulated fleet set up to match.
//!
//! A rehearsal runs the real planner and runner, so the only things that
//! change are the playbook's durations (before planning) and each host's
//! [`Target`] (after): its address becomes the simulator's address for it,
//! on 127.0.0.0/8, its transport SSH (a Windows host keeps its OS, so its
//! PowerShell goes as to Windows OpenSSH), its host key the simulator's,
//! pinned, and nothing of the inventory's way in (jump hosts, ports, keys,
//! passwords) is kept. The inventory's addresses are therefore never
//! contacted. The simulator's addresses are taken from a /16 of
//! 127.0.0.0/8 that holds none of the inventory's.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::{Fleet, Signatures, Spec};
use super::scenario::Scenario;
use super::simulator::host_key_line;
use crate::load::{Action, HumanDuration, Pause, Playbook, Step};
use crate::plan::Plan;
use crate::transport::{HostKeyPolicy, SshSettings, Target, TransportKind};

/// Timeouts are scaled, but never below this (or their own length, if
/// shorter): connecting and answering over real SSH takes real time.
const TIMEOUT_FLOOR: Duration = Duration::from_secs(5);

/// Scales every pause, wait, retry delay and timeout of `playbook` by `scale`.
pub fn scale_playbook(playbook: &mut Playbook, scale: f64) {
    if let Pause::Wait(d) = &mut playbook.pause_between_waves {
        d.0 = d.0.mul_f64(scale);
    }
    let steps = playbook
        .phases
        .iter_mut()
        .flat_map(|p| p.steps.iter_mut())
        .chain(playbook.on_failure.iter_mut());
    for step in steps {
        scale_step(step, scale);
    }
}

fn scale_timeout(d: Duration, scale: f64) -> Duration {
    d.mul_f64(scale).max(d.min(TIMEOUT_FLOOR))
}

fn scale_step(step: &mut Step, scale: f64) {
    step.retry_delay.0 = step.retry_delay.0.mul_f64(scale);
    // A reboot the step's exit code asks for waits as long as the step's
    // timeout, or the default reboot timeout: scaled too.
    if step.timeout.is_none() && !step.reboot_codes.is_empty() {
        step.timeout = Some(HumanDuration(crate::plan::DEFAULT_REBOOT_TIMEOUT));
    }
    if let Some(t) = &mut step.timeout {
        t.0 = scale_timeout(t.0, scale);
    }
    match &mut step.action {
        Action::Wait(d) => d.0 = d.0.mul_f64(scale),
        Action::Reboot { timeout } => {
            let t = timeout
                .map(|t| t.0)
                .unwrap_or(crate::plan::DEFAULT_REBOOT_TIMEOUT);
            *timeout = Some(HumanDuration(scale_timeout(t, scale)));
        }
        _ => {}
    }
    for rollback in &mut step.rollback {
        scale_step(rollback, scale);
    }
}

/// The literal text a step's template always renders (its longest piece
/// outside `{{ }}`, `{% %}` and `{# #}`, preferring pieces outside any
/// `{% if %}` or `{% for %}`), by which the simulator knows the step.
pub fn signature(template: &str) -> Option<String> {
    let mut best: Option<(bool, usize, &str)> = None;
    let mut depth = 0usize;
    let mut rest = template;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open))
            .min();
        let (literal, tail) = match next {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let piece = literal.trim();
        let candidate = (depth == 0, piece.len(), piece);
        if piece.len() >= 8 && best.is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
            best = Some(candidate);
        }
        if tail.is_empty() {
            break;
        }
        let close = match &tail[..2] {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let Some(end) = tail.find(close) else { break };
        if &tail[..2] == "{%" {
            let tag = tail[2..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
            let word = tag.split_whitespace().next().unwrap_or("");
            if ["if", "for", "macro", "filter", "block"].contains(&word) {
                depth += 1;
            } else if word.starts_with("end") {
                depth = depth.saturating_sub(1);
            }
        }
        rest = &tail[end + 2..];
    }
    best.map(|(_, _, piece)| piece.to_string())
}

fn template_of(step: &Step) -> Option<&str> {
    match &step.action {
        Action::Run(t) | Action::Sh(t) | Action::PowerShell(t) | Action::Cmd(t) => Some(&t.text),
        _ => None,
    }
}

/// A `script:` step is run from its copy on the host,
/// `.../orchestrate-UNIQUE-NAME` (`transport::temp_path`): its signature
/// is `-NAME`, the file's name as the copy keeps it, when the playbook
/// names the file literally.
fn script_signature(src: &str) -> Option<String> {
    if src.contains("{{") || src.contains("{%") {
        return None;
    }
    let name = src.rsplit(['/', '\\']).next().filter(|n| !n.is_empty())?;
    Some(format!("-{}", crate::transport::temp_name(name)))
}

/// The playbook's phases, and the signature of each of their steps.
pub fn phase_signatures(playbook: &Playbook) -> (Vec<String>, Vec<(String, usize)>) {
    let phases = playbook.phases.iter().map(|p| p.name.clone()).collect();
    let mut signatures: Vec<(String, usize)> = Vec::new();
    for (index, phase) in playbook.phases.iter().enumerate() {
        for step in &phase.steps {
            let sig = match &step.action {
                Action::Script { src, .. } => script_signature(&src.text),
                _ => template_of(step).and_then(signature),
            };
            if let Some(sig) = sig
                && !signatures.iter().any(|(s, _)| *s == sig)
            {
                signatures.push((sig, index));
            }
        }
    }
    (phases, signatures)
}

/// The fail rates of `playbook`'s phases: `fail_rate`, if given, shared
/// equally by the phases that change something (not only `check_safe`
/// steps); else the scenario's.
pub fn phase_rates(playbook: &Playbook, scenario: &Scenario, fail_rate: Option<f64>) -> Vec<f64> {
    match fail_rate {
        Some(rate) => {
            let changes: Vec<bool> = playbook
                .phases
                .iter()
                .map(|p| p.steps.iter().any(|s| !s.check_safe))
                .collect();
            let n = changes.iter().filter(|c| **c).count().max(1);
            changes
                .iter()
                .map(|c| if *c { rate / n as f64 } else { 0.0 })
                .collect()
        }
        None => playbook
            .phases
            .iter()
            .map(|p| scenario.fail_rates.get(&p.name).copied().unwrap_or(0.0))
            .collect(),
    }
}

/// A /16 of 127.0.0.0/8 (its second byte) holding none of `addresses`.
fn free_block<'a>(addresses: impl Iterator<Item = &'a str>) -> u8 {
    let taken: std::collections::HashSet<u8> = addresses
        .filter_map(|a| a.strip_prefix("127."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    (64..=254u8)
        .rev()
        .find(|b| !taken.contains(b))
        .unwrap_or(200)
}

/// The simulator's address for the `index`-th host.
fn address(block: u8, index: usize) -> Ipv4Addr {
    let n = index + 1;
    Ipv4Addr::new(127, block, (n >> 8) as u8, (n & 0xff) as u8)
}

/// What [`point_at_simulator`] needs besides the plan.
pub struct Rehearsal<'a> {
    pub seed: u64,
    pub time_scale: f64,
    pub scenario: Option<Scenario>,
    pub rates: Vec<f64>,
    /// The rehearsal's client key (the simulator accepts any).
    pub client_key: &'a Path,
    /// An empty known_hosts file: keys are pinned, and the operator's own
    /// known_hosts is never read or written.
    pub known_hosts: &'a Path,
    /// The simulator's port.
    pub port: u16,
}

/// The fleet for `plan`'s hosts. Call [`point_at_simulator`] with the
/// simulator's port to rewrite the plan's targets to match.
pub fn fleet_for(plan: &Plan, rehearsal: &Rehearsal) -> Arc<Fleet> {
    let (phases, signatures) = phase_signatures(&plan.playbook);
    let block = free_block(plan.hosts().map(|h| h.target.address.as_str()));
    let specs = plan
        .hosts()
        .filter(|h| h.skipped.is_none())
        .enumerate()
        .map(|(i, h)| Spec {
            name: h.name.clone(),
            client: h.client.clone(),
            os: h.os,
            address: address(block, i),
        })
        .collect();
    Fleet::new(
        rehearsal.seed,
        rehearsal.time_scale,
        rehearsal.scenario.clone(),
        rehearsal.rates.clone(),
        phases,
        Signatures::new(signatures),
        specs,
    )
}

/// Points every planned host of `plan` at its simulated endpoint in `fleet`.
pub fn point_at_simulator(plan: &mut Plan, fleet: &Fleet, rehearsal: &Rehearsal) {
    let by_name: std::collections::HashMap<&str, &super::endpoint::Endpoint> = fleet
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    for client in &mut plan.clients {
        for host in client.hosts.iter_mut().filter(|h| h.skipped.is_none()) {
            let Some(endpoint) = by_name.get(host.name.as_str()) else {
                continue;
            };
            host.target = simulated_target(&host.target, endpoint.address, rehearsal);
            host.target.ssh.host_key = Some(host_key_line(rehearsal.seed, &host.name));
        }
    }
}

fn simulated_target(real: &Target, address: Ipv4Addr, rehearsal: &Rehearsal) -> Target {
    let mut become_settings = real.r#become.clone();
    become_settings.password = None;
    Target {
        name: real.name.clone(),
        address: address.to_string(),
        port: Some(rehearsal.port),
        os: real.os,
        user: Some(real.user.clone().unwrap_or_else(|| "rehearsal".into())),
        kind: TransportKind::Ssh,
        ssh: SshSettings {
            identity_file: Some(rehearsal.client_key.to_path_buf()),
            known_hosts: Some(rehearsal.known_hosts.to_path_buf()),
            ..SshSettings::default()
        },
        winrm: Default::default(),
        host_key_policy: HostKeyPolicy::Strict,
        // Not scaled: connecting is real work here too (key exchange over
        // real SSH), not a duration of the playbook's.
        connect_timeout: real.connect_timeout,
        reboot_command: None,
        r#become: become_settings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_longest_literal_that_always_renders() {
        assert_eq!(
            signature("msiexec /x {{ code }} KLLOGIN={{ login }} /qn /norestart").as_deref(),
            Some("/qn /norestart")
        );
        assert_eq!(
            signature(
                "{% if x %}a very long conditional text{% endif %}\nWrite-Output 'done here'"
            )
            .as_deref(),
            Some("Write-Output 'done here'")
        );
        assert_eq!(signature("{{ a }}"), None);
    }

    #[test]
    fn simulated_addresses_avoid_the_inventorys() {
        let block = free_block(["127.254.0.1", "10.0.0.1"].into_iter());
        assert_eq!(block, 253);
        assert_eq!(address(block, 0), Ipv4Addr::new(127, 253, 0, 1));
        assert_eq!(address(block, 300), Ipv4Addr::new(127, 253, 1, 45));
    }

    #[test]
    fn timeouts_scale_down_to_a_floor_and_pauses_all_the_way() {
        assert_eq!(
            scale_timeout(Duration::from_secs(1200), 0.001),
            Duration::from_secs(5)
        );
        assert_eq!(
            scale_timeout(Duration::from_secs(2), 0.001),
            Duration::from_secs(2)
        );
        assert_eq!(
            scale_timeout(Duration::from_secs(100), 0.5),
            Duration::from_secs(50)
        );
    }
}
