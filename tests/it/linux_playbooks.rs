//! The shipped Linux playbooks, run end to end through `orchestrate` over
//! SSH against real OpenSSH servers on loopback. Each host's PATH starts
//! with stand-ins for what cannot run here (KESL, dpkg/apt, systemctl,
//! ClamAV, mdatp: `tests/standins/bin`), which keep the host's state in a
//! folder of its own; the playbooks' path variables point into it. The
//! tests check what an MSP technician would check on the endpoint and in
//! the report. The macOS playbook cannot run here: `linux_playbooks_plan.rs`
//! validates and plans it with the Linux ones.

use crate::linux_lab;

use linux_lab::{Lab, host_report, step};
use serde_json::{Value, json};

const CLAMAV: &str = "linux-kesl-to-clamav.yml";
const MDATP: &str = "linux-kesl-to-mdatp.yml";

/// What the client's inventory says to exclude: flat lists for Windows
/// (as a mixed fleet's client-level lists are), and the Linux hosts' own.
fn client_exclusions() -> Value {
    json!({ "exclusions": {
        "paths": ["D:\\WMS\\Data", "/srv/from-the-flat-list"],
        "processes": ["sqlservr.exe"],
        "extensions": [".mdf", ".pst"],
        "linux": {
            "paths": ["/var/lib/postgresql", "/srv/wms/label queue/"],
            "processes": ["wmsagent"],
            "extensions": [".bak", "ldf"],
        },
    }})
}

/// KESL's own exclusions on the endpoint; one is also in the inventory, one
/// is switched off in KESL (and so must not come over).
const KESL_EXCLUSIONS: &[&str] = &[
    "/opt/app/data",
    "/srv/build cache/tmp",
    "/var/lib/postgresql",
    "off /srv/old-exports",
];

/// The exclusions the mdatp stand-in holds on `host`, as `KIND VALUE`, sorted.
fn mdatp_exclusions(lab: &Lab, host: &str) -> Vec<String> {
    let mut exclusions: Vec<String> = lab
        .host(host)
        .state_file("mdatp/exclusions")
        .lines()
        .map(|l| l.replace('\t', " "))
        .collect();
    exclusions.sort();
    exclusions
}

#[test]
fn defender_gets_the_exclusions_of_kesl_and_of_the_inventory_and_is_onboarded() {
    let lab = Lab::new(&["nw-edi01"]);
    lab.kesl_endpoint("nw-edi01", KESL_EXCLUSIONS);
    let mut vars = client_exclusions();
    vars["eicar_test"] = json!(true);
    lab.inventory(MDATP, "northwind", json!({}), vars);
    let (run, report) = lab.run(MDATP, &[]);
    run.expect_code(0);
    let host = lab.host("nw-edi01");
    let exclusions = mdatp_exclusions(&lab, "nw-edi01");
    assert_eq!(
        exclusions,
        [
            "extension .bak",
            "extension .ldf",
            "folder /opt/app/data/",
            "folder /srv/build cache/tmp/",
            "folder /srv/wms/label queue/",
            "folder /var/lib/postgresql/",
            "process wmsagent",
        ],
        "only the Linux lists: no Windows path, process or extension (.mdf, .pst)"
    );
    assert!(
        host.exists("etc/opt/microsoft/mdatp/mdatp_onboard.json"),
        "onboarded"
    );
    assert!(host.installed("mdatp") && host.running("mdatp"));
    assert!(!host.installed("kesl") && !host.installed("klnagent64"));
    assert!(!host.exists("opt/kaspersky"));
    assert!(
        host.state_file("mdatp/threats").contains("EICAR"),
        "the EICAR test file was caught"
    );
    let h = host_report(&report, "nw-edi01");
    assert_eq!(h["status"], "succeeded");
    for name in [
        "Defender is healthy and licensed",
        "real-time protection is on",
        "Defender definitions are up to date",
        "exclusions from the inventory are in Defender",
        "exclusions exported from KESL are in Defender",
        "no Kaspersky left on the host",
        "EICAR detection test",
    ] {
        assert_eq!(step(h, name)["status"], "ok", "{name}");
    }
}

#[test]
fn a_failed_install_puts_kesl_back() {
    let lab = Lab::new(&["acme-lnx01"]);
    lab.kesl_endpoint("acme-lnx01", &["/opt/app/data"]);
    let host = lab.host("acme-lnx01");
    host.inject("fail-install");
    lab.inventory(CLAMAV, "acme", json!({}), client_exclusions());
    let (run, report) = lab.run(&format!("fast:{CLAMAV}"), &[]);
    run.expect_code(1);
    let h = host_report(&report, "acme-lnx01");
    assert_eq!(h["status"], "failed", "failed, and rolled back: {h:#}");
    let install = step(h, "install ClamAV");
    assert_eq!(install["status"], "failed");
    assert_eq!(install["attempts"], 3, "tried 1 + 2 retries");
    let rollback = h["rollback"].as_array().unwrap();
    let names: Vec<&str> = rollback
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "put Kaspersky's folders back",
            "put Network Agent back from the staged packages",
            "put KESL back from the staged packages",
            "make sure some antivirus is on",
        ]
    );
    assert!(
        rollback.iter().all(|r| r["status"] == "ok"),
        "{rollback:#?}"
    );
    // The endpoint is as it was: KESL and the agent installed and running.
    assert!(host.installed("kesl") && host.running("kesl"));
    assert!(host.installed("klnagent64") && host.running("klnagent64"));
    assert!(
        host.exists("var/opt/kaspersky/kesl"),
        "its data folder is back"
    );
    assert!(!host.installed("clamav-daemon"));
}

#[test]
fn defender_with_real_time_protection_off_fails_verify_and_kesl_comes_back() {
    let lab = Lab::new(&["bl-backup01"]);
    lab.kesl_endpoint("bl-backup01", &["/srv/backup/restic-repo"]);
    let host = lab.host("bl-backup01");
    host.inject("rtp-off");
    lab.inventory(MDATP, "brightline", json!({}), json!({ "exclusions": {} }));
    let (run, report) = lab.run(MDATP, &[]);
    run.expect_code(1);
    let h = host_report(&report, "bl-backup01");
    assert_eq!(h["status"], "failed", "{h:#}");
    assert_eq!(step(h, "Defender is healthy and licensed")["status"], "ok");
    assert_eq!(step(h, "real-time protection is on")["status"], "failed");
    assert!(
        h["error"]
            .as_str()
            .unwrap()
            .contains("real-time protection is on"),
        "{h:#}"
    );
    let rollback = h["rollback"].as_array().unwrap();
    assert!(
        rollback.iter().all(|r| r["status"] == "ok"),
        "{rollback:#?}"
    );
    assert!(
        rollback
            .iter()
            .any(|r| r["name"] == "remove Defender if KESL can come back"),
        "{rollback:#?}"
    );
    assert!(
        host.installed("kesl") && host.running("kesl"),
        "KESL is back"
    );
    assert!(
        !host.installed("mdatp"),
        "no two real-time scanners side by side"
    );
}

#[test]
fn a_canary_then_waves_and_a_report_per_host() {
    let names = ["nw-01", "nw-02", "nw-03", "nw-04", "nw-05"];
    let lab = Lab::new(&names);
    for name in &names[..4] {
        lab.kesl_endpoint(name, &["/opt/app/data"]);
    }
    lab.kesl_endpoint_rpm("nw-05", &["/opt/app/data"]);
    lab.host("nw-04").inject("fail-install");
    lab.inventory(
        CLAMAV,
        "northwind",
        json!({ "waves": [1, 2, "100%"], "pause_between_waves": "0s", "failure_budget": 1 }),
        client_exclusions(),
    );
    let (run, report) = lab.run(&format!("fast:{CLAMAV}"), &[]);
    run.expect_code(1);
    let client = &report["clients"][0];
    let waves: Vec<Value> = client["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["hosts"].clone())
        .collect();
    assert_eq!(
        waves,
        [
            json!(["nw-01"]),
            json!(["nw-02", "nw-03"]),
            json!(["nw-04", "nw-05"])
        ],
        "the canary first, alone"
    );
    for (name, wave, status) in [
        ("nw-01", 1, "succeeded"),
        ("nw-02", 2, "succeeded"),
        ("nw-03", 2, "succeeded"),
        ("nw-04", 3, "failed"),
        ("nw-05", 3, "succeeded"),
    ] {
        let h = host_report(&report, name);
        assert_eq!(
            (h["wave"].as_u64(), h["status"].as_str()),
            (Some(wave), Some(status)),
            "{name}"
        );
        let host = lab.host(name);
        if name == "nw-05" {
            // The RHEL-family host: EPEL's clamd, its own config, enabled.
            let conf = host.file("etc/clamd.d/scan.conf");
            assert!(
                conf.contains("#Example\n") && conf.contains("ExcludePath ^/opt/app/data(/|$)"),
                "{conf}"
            );
            assert!(
                host.running("clamd@scan") && !host.installed("kesl"),
                "{name}"
            );
            // No systemd here: the scheduled scan is a cron job; SELinux
            // enforcing: clamd may scan the system.
            assert!(host.exists("etc/cron.d/orchestrate-clamdscan"), "{name}");
            assert_eq!(
                host.state_file("sebool/antivirus_can_scan_system"),
                "on\n",
                "{name}"
            );
        } else if status == "succeeded" {
            assert!(
                host.running("clamav-daemon") && !host.installed("kesl"),
                "{name}"
            );
        } else {
            assert!(
                host.running("kesl") && !host.running("clamav-daemon"),
                "{name}"
            );
        }
    }
    assert_eq!(
        client["status"], "failed",
        "one host failed, within the budget"
    );
    assert_eq!(report["status"], "failed");
}

#[test]
fn check_on_the_canary_touches_nothing_and_says_what_would_run() {
    let lab = Lab::new(&["nw-canary", "nw-other"]);
    lab.kesl_endpoint("nw-canary", KESL_EXCLUSIONS);
    lab.kesl_endpoint("nw-other", KESL_EXCLUSIONS);
    lab.inventory(MDATP, "northwind", json!({}), client_exclusions());
    let (run, report) = lab.run(MDATP, &["--limit", "nw-canary", "--check"]);
    run.expect_code(0);
    let hosts = report["clients"][0]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "only the canary: {report:#}");
    let h = host_report(&report, "nw-canary");
    for name in [
        "find KESL and Network Agent",
        "export KESL settings",
        "list the exclusions to carry over",
        "Defender can be installed and onboarded here",
    ] {
        assert_eq!(step(h, name)["status"], "ok", "{name}");
    }
    let apply = step(h, "apply exclusions exported from KESL");
    assert_eq!(apply["status"], "skipped");
    let detail = apply["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("would run") && detail.contains("'/srv/build cache/tmp/'"),
        "check mode shows KESL's exclusions as they would be applied: {detail}"
    );
    for name in ["nw-canary", "nw-other"] {
        let host = lab.host(name);
        assert!(
            host.installed("kesl") && host.running("kesl"),
            "{name} untouched"
        );
        assert!(!host.installed("mdatp"), "{name} untouched");
    }
}

#[test]
fn a_failed_defender_install_removes_nothing_more_and_puts_kesl_back() {
    let lab = Lab::new(&["acme-lnx02"]);
    lab.kesl_endpoint("acme-lnx02", &["/opt/app/data"]);
    let host = lab.host("acme-lnx02");
    host.inject("fail-install");
    lab.inventory(MDATP, "acme", json!({}), client_exclusions());
    let (run, report) = lab.run(&format!("fast:{MDATP}"), &[]);
    run.expect_code(1);
    let h = host_report(&report, "acme-lnx02");
    assert_eq!(h["status"], "failed", "{h:#}");
    assert_eq!(step(h, "install Defender for Endpoint")["status"], "failed");
    let rollback = h["rollback"].as_array().unwrap();
    assert!(
        rollback.iter().all(|r| r["status"] == "ok"),
        "{rollback:#?}"
    );
    assert!(
        host.installed("kesl") && host.running("kesl"),
        "KESL is back"
    );
    assert!(host.installed("klnagent64"), "the agent is back");
    assert!(!host.installed("mdatp"));
}

#[test]
fn when_nothing_protects_a_host_the_report_says_a_person_must_look() {
    let lab = Lab::new(&["acme-lnx03"]);
    lab.kesl_endpoint("acme-lnx03", &["/opt/app/data"]);
    let host = lab.host("acme-lnx03");
    // No KESL packages staged, and clamd will not start.
    std::fs::remove_dir_all(host.root().join("var/opt/msp/packages/kesl")).unwrap();
    host.inject("fail-start-clamav-daemon");
    lab.inventory(CLAMAV, "acme", json!({}), client_exclusions());
    let (run, report) = lab.run(&format!("fast:{CLAMAV}"), &[]);
    run.expect_code(3);
    let h = host_report(&report, "acme-lnx03");
    assert_eq!(h["status"], "rollback_failed", "{h:#}");
    assert_eq!(step(h, "start clamd")["status"], "failed");
    let last = h["rollback"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["name"].as_str(), last["status"].as_str()),
        (Some("make sure some antivirus is on"), Some("failed"))
    );
    assert_eq!(report["status"], "rollback_failed");
}

#[test]
fn a_stopped_kesl_stops_the_host_before_anything_is_removed() {
    let lab = Lab::new(&["acme-lnx04"]);
    lab.kesl_endpoint("acme-lnx04", &["/opt/app/data"]);
    let host = lab.host("acme-lnx04");
    host.standin(&["systemctl", "stop", "kesl"]);
    lab.inventory(CLAMAV, "acme", json!({}), client_exclusions());
    let (run, report) = lab.run(CLAMAV, &[]);
    run.expect_code(1);
    let h = host_report(&report, "acme-lnx04");
    assert_eq!(h["status"], "failed", "{h:#}");
    assert_eq!(step(h, "export KESL settings")["status"], "failed");
    linux_lab::assert_only_precheck_ran(h);
    assert!(host.installed("kesl") && !host.installed("clamav-daemon"));
    assert!(
        host.running("kesl"),
        "on_failure made sure some antivirus is on"
    );
}

#[test]
fn kesl_masks_become_mdatp_folder_wildcards_and_what_mdatp_cannot_say_is_reported() {
    let lab = Lab::new(&["nw-wms-app01"]);
    // KESL masks: * within one name, ** across any number of folders.
    lab.kesl_endpoint(
        "nw-wms-app01",
        &["/srv/*/cache", "/opt/app/**", "/srv/**/tmp"],
    );
    let vars = json!({ "exclusions": { "linux": {
        "paths": ["/srv/wms/exports/*/tmp", "/data/**/spool"] } } });
    lab.inventory(MDATP, "northwind", json!({}), vars);
    let (run, report) = lab.run(MDATP, &[]);
    run.expect_code(0);
    let exclusions = mdatp_exclusions(&lab, "nw-wms-app01");
    // mdatp's * is one folder inside a path, as KESL's * is one name; a
    // trailing ** is the folder itself (Microsoft, "Configure and validate
    // exclusions for Microsoft Defender for Endpoint on Linux").
    assert_eq!(
        exclusions,
        [
            "folder /opt/app/",
            "folder /srv/*/cache/",
            "folder /srv/wms/exports/*/tmp/",
        ],
        "no mask carried as literal text, nothing widened"
    );
    let h = host_report(&report, "nw-wms-app01");
    let listed = step(h, "list the exclusions to carry over")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    for said in [
        "not carried: KESL /srv/**/tmp: mdatp has no wildcard for any number of folders (**)",
        "not carried: inventory path /data/**/spool: mdatp has no wildcard",
        "KESL folder: /srv/*/cache/",
    ] {
        assert!(listed.contains(said), "{said}:\n{listed}");
    }
    for name in [
        "exclusions from the inventory are in Defender",
        "exclusions exported from KESL are in Defender",
    ] {
        assert_eq!(step(h, name)["status"], "ok", "{name}");
    }
}
