//! The run the report-rendering tests read back, built from the runner's
//! own events through `Report::apply`, as the runner's report builder does.
//!
//! acme-dental's canary passed, then wave 2 lost one host that rolled back
//! and one whose rollback failed, and the client halted with wave 3
//! untouched and a Linux box skipped; smith & jones finished with one laptop
//! out of reach. Output and a host name carry markup, `&` and colour codes,
//! as untrusted endpoints may.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use orchestrate::plan::Wave;
use orchestrate::report::run_json::Report;
use orchestrate::run::events::{ClientInfo, HostInfo, RollbackRecord, StepRecord};
use orchestrate::run::{ClientStatus, Event, HostStatus, RunStatus, StepStatus};

pub const EVIL_HOST: &str = "sj-ws02<script>alert('host')</script>&co";
pub const EVIL_OUTPUT: &str =
    "<script>document.title='pwned'</script> R&D share \u{1b}[32mhealthy\u{1b}[0m\n";

/// A client: its name, its waves' hosts, and its hosts the playbook skips.
pub type ClientSpec<'a> = (&'a str, &'a [&'a [&'a str]], &'a [&'a str]);

/// Folds events into a report the way the runner's report builder does,
/// with a clock that moves on by each step's duration.
pub struct Fleet {
    pub report: Report,
    now: DateTime<Utc>,
}

impl Fleet {
    pub fn new(clients: &[ClientSpec]) -> Fleet {
        let now: DateTime<Utc> = "2026-11-22T07:53:19Z".parse().unwrap();
        let mut fleet = Fleet {
            report: Report::default(),
            now,
        };
        let clients = clients
            .iter()
            .map(|(name, waves, skipped)| ClientInfo {
                name: name.to_string(),
                waves: waves
                    .iter()
                    .enumerate()
                    .map(|(i, hosts)| Wave {
                        index: i + 1,
                        hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    })
                    .collect(),
                hosts: waves
                    .iter()
                    .enumerate()
                    .flat_map(|(i, hosts)| {
                        hosts.iter().map(move |h| HostInfo {
                            name: h.to_string(),
                            wave: Some(i + 1),
                            skipped: None,
                        })
                    })
                    .chain(skipped.iter().map(|h| HostInfo {
                        name: h.to_string(),
                        wave: None,
                        skipped: Some("os linux is not one the playbook is for (windows)".into()),
                    }))
                    .collect(),
                allowed_failures: 1,
            })
            .collect();
        fleet.emit(Event::RunStarted {
            rehearsal: false,
            run_id: "20261122-075319-7f3a".into(),
            playbook: "playbooks/kes-to-defender.yml".into(),
            inventory: "inventory.yml".into(),
            started_at: fleet.time(),
            check: false,
            clients,
        });
        fleet
    }

    pub fn time(&self) -> String {
        self.now
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    pub fn emit(&mut self, event: Event) {
        let time = self.time();
        self.report.apply(&event, &time);
    }

    pub fn wait(&mut self, ms: u64) {
        self.now += chrono::Duration::milliseconds(ms as i64);
    }

    pub fn wave(&mut self, client: &str, wave: usize, hosts: &[&str]) {
        self.emit(Event::WaveStarted {
            client: client.into(),
            wave,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        });
    }

    pub fn wave_done(&mut self, client: &str, wave: usize) {
        self.emit(Event::WaveFinished {
            client: client.into(),
            wave,
            failed_so_far: 0,
            allowed_failures: 1,
        });
    }

    pub fn host(&mut self, client: &str, host: &str, wave: usize) {
        self.emit(Event::HostStarted {
            client: client.into(),
            host: host.into(),
            wave,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        (client, host): (&str, &str),
        phase: &str,
        name: &str,
        status: StepStatus,
        exit_code: Option<i32>,
        ms: u64,
        stdout: &str,
        stderr: &str,
    ) {
        self.wait(ms);
        self.emit(Event::StepFinished {
            client: client.into(),
            host: host.into(),
            step: StepRecord {
                phase: phase.into(),
                name: name.into(),
                index: 0,
                status,
                exit_code,
                attempts: if status == StepStatus::Ok { 1 } else { 3 },
                duration_ms: ms,
                detail: (status == StepStatus::Failed)
                    .then(|| format!("exit code {} is not ok", exit_code.unwrap_or(-1))),
                stdout: Some(stdout.into()),
                stderr: Some(stderr.into()),
                check_safe: false,
                capture: None,
            },
        });
    }

    /// The steps of a host that migrates cleanly, with its evidence output.
    pub fn migrates(&mut self, client: &str, host: &str, wave: usize, verify_output: &str) {
        self.host(client, host, wave);
        let at = (client, host);
        let ok = StepStatus::Ok;
        self.step(
            at,
            "precheck",
            "find Kaspersky products",
            ok,
            Some(0),
            900,
            "[{\"DisplayName\":\"Kaspersky Endpoint Security 12\"}]",
            "",
        );
        self.step(
            at,
            "uninstall",
            "remove Kaspersky Endpoint Security",
            ok,
            Some(3010),
            95_000,
            "",
            "",
        );
        self.emit(Event::Rebooting {
            client: client.into(),
            host: host.into(),
            step: "remove Kaspersky Endpoint Security".into(),
            logged_on: match host {
                "acme-ws01" => vec![
                    "alice (console, Active)".into(),
                    "<bob> (rdp-tcp#2, Disc)".into(),
                ],
                _ => Vec::new(),
            },
            logged_on_unknown: None,
        });
        self.step(
            at,
            "uninstall",
            "confirm Kaspersky services are gone",
            ok,
            Some(0),
            1_200,
            "no AVP*, no klnagent",
            "",
        );
        self.step(
            at,
            "install",
            "enable Microsoft Defender",
            ok,
            Some(0),
            20_000,
            "",
            "",
        );
        self.step(
            at,
            "verify",
            "Defender real-time protection is on",
            ok,
            Some(0),
            2_900,
            verify_output,
            "",
        );
        self.finish(client, host, HostStatus::Succeeded, None, Some(118_700));
    }

    pub fn rollback_step(
        &mut self,
        (client, host): (&str, &str),
        name: &str,
        status: StepStatus,
        exit_code: i32,
        stderr: &str,
    ) {
        self.wait(30_000);
        self.emit(Event::RollbackStepFinished {
            client: client.into(),
            host: host.into(),
            step: RollbackRecord {
                name: name.into(),
                status,
                exit_code: Some(exit_code),
                detail: (status == StepStatus::Failed).then(|| format!("exit code {exit_code}")),
                stdout: Some(String::new()),
                stderr: Some(stderr.into()),
            },
        });
    }

    pub fn finish(
        &mut self,
        client: &str,
        host: &str,
        status: HostStatus,
        error: Option<&str>,
        gap: Option<u64>,
    ) {
        self.emit(Event::HostFinished {
            client: client.into(),
            host: host.into(),
            status,
            error: error.map(str::to_string),
            protection_gap_ms: gap,
        });
    }
}

/// The run the tests read back (see the module's doc).
pub fn dreaded_run() -> Report {
    const ACME: &str = "acme-dental";
    const SJ: &str = "smith & jones";
    let mut f = Fleet::new(&[
        (
            ACME,
            &[
                &["acme-ws01"],
                &["acme-ws02", "acme-fs01", "acme-ws03"],
                &["acme-ws04", "acme-ws05"],
            ],
            &["acme-lnx01"],
        ),
        (SJ, &[&["sj-ws01"], &[EVIL_HOST, "sj-laptop03"]], &[]),
    ]);

    f.wave(ACME, 1, &["acme-ws01"]);
    f.migrates(
        ACME,
        "acme-ws01",
        1,
        "RealTimeProtectionEnabled : True\nAMRunningMode : Normal",
    );
    f.wave_done(ACME, 1);

    f.wait(300_000);
    f.wave(ACME, 2, &["acme-ws02", "acme-fs01", "acme-ws03"]);
    f.migrates(ACME, "acme-ws03", 2, "RealTimeProtectionEnabled : True");
    // acme-ws02: msiexec fails; reinstalling Kaspersky from the cache works.
    f.host(ACME, "acme-ws02", 2);
    let ws02 = (ACME, "acme-ws02");
    f.step(
        ws02,
        "precheck",
        "find Kaspersky products",
        StepStatus::Ok,
        Some(0),
        800,
        "[]",
        "",
    );
    f.step(ws02, "uninstall", "remove Kaspersky Endpoint Security", StepStatus::Failed, Some(1603), 61_000,
        &format!("MSI (s) (A0:B4): Product: Kaspersky Endpoint Security -- Removal failed.\n{EVIL_OUTPUT}"),
        "Error 1603: a fatal error occurred during removal: KLPASSWD rejected");
    f.rollback_step(
        ws02,
        "reinstall Kaspersky from the cached package",
        StepStatus::Ok,
        0,
        "",
    );
    f.rollback_step(
        ws02,
        "make sure some antivirus is on",
        StepStatus::Ok,
        0,
        "",
    );
    f.finish(
        ACME,
        "acme-ws02",
        HostStatus::Failed,
        Some("step `remove Kaspersky Endpoint Security` (uninstall) exit code 1603"),
        Some(61_000),
    );
    // acme-fs01: verify fails, and so does putting Kaspersky back.
    f.host(ACME, "acme-fs01", 2);
    let fs01 = (ACME, "acme-fs01");
    f.step(
        fs01,
        "uninstall",
        "remove Kaspersky Endpoint Security",
        StepStatus::Ok,
        Some(0),
        80_000,
        "",
        "",
    );
    f.step(
        fs01,
        "verify",
        "Defender real-time protection is on",
        StepStatus::TimedOut,
        None,
        600_000,
        "waiting for WinDefend",
        "",
    );
    f.rollback_step(
        fs01,
        "reinstall Kaspersky from the cached package",
        StepStatus::Failed,
        1618,
        "Another installation is already in progress.",
    );
    f.rollback_step(
        fs01,
        "make sure some antivirus is on",
        StepStatus::Ok,
        0,
        "",
    );
    f.finish(
        ACME,
        "acme-fs01",
        HostStatus::RollbackFailed,
        Some("step `Defender real-time protection is on` (verify) timed out after 10m"),
        Some(740_000),
    );
    f.wave_done(ACME, 2);
    f.emit(Event::ClientHalted {
        client: ACME.into(),
        reason: "2 hosts failed, more than the failure budget of 1".into(),
    });
    for host in ["acme-ws04", "acme-ws05"] {
        f.emit(Event::HostNotStarted {
            client: ACME.into(),
            host: host.into(),
            reason: "client halted".into(),
        });
    }
    f.emit(Event::ClientFinished {
        client: ACME.into(),
        status: ClientStatus::Halted,
    });

    f.wave(SJ, 1, &["sj-ws01"]);
    f.migrates(SJ, "sj-ws01", 1, "RealTimeProtectionEnabled : True");
    f.wave_done(SJ, 1);
    f.wave(SJ, 2, &[EVIL_HOST, "sj-laptop03"]);
    f.migrates(SJ, EVIL_HOST, 2, EVIL_OUTPUT);
    f.wait(25_000);
    f.finish(
        SJ,
        "sj-laptop03",
        HostStatus::Unreachable,
        Some("host sj-laptop03: no connection after 25s"),
        None,
    );
    f.wave_done(SJ, 2);
    f.emit(Event::ClientFinished {
        client: SJ.into(),
        status: ClientStatus::Failed,
    });
    let finished_at = f.time();
    f.emit(Event::RunFinished {
        // As the runner decides it: a rollback failed (acme-fs01), which
        // outranks the halt.
        status: RunStatus::RollbackFailed,
        finished_at,
    });
    f.report
}
