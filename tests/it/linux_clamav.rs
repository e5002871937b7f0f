//! The KESL → ClamAV playbook, end to end over SSH, against the real ClamAV
//! from Debian: clamd and clamonacc run by the lab as root with each host's
//! own config, socket and one-signature database (EICAR, built with
//! `sigtool`), fetched by the real `freshclam` from the lab's mirror on
//! 127.0.0.1; KESL and Network Agent as real `.deb` packages removed and
//! reinstalled by the real `dpkg` in the host's own package root. What is
//! asserted is what a technician would check: another user's EICAR file is
//! blocked on access, and a migration that cannot show that is rolled back.

use crate::linux_lab;

use linux_lab::{
    KSC_SERVER, Lab, assert_only_precheck_ran, host_report, step, with_fault_before_verify,
};
use serde_json::{Value, json};

const CLAMAV: &str = "linux-kesl-to-clamav.yml";

/// clamonacc needs fanotify, hence root (CAP_SYS_ADMIN) and a kernel that
/// has it. Where it is missing the on-access tests cannot prove anything:
/// they fail saying so, rather than pass.
fn require_fanotify() {
    let fd = unsafe { libc::fanotify_init(libc::FAN_CLASS_CONTENT, libc::O_RDONLY as u32) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        panic!(
            "fanotify is not available here ({err}): clamonacc cannot run, so on-access \
             protection cannot be tested. Run the tests as root on a kernel with fanotify."
        );
    }
    unsafe { libc::close(fd) };
}

/// One Debian endpoint with KESL and Network Agent, KESL excluding `kesl`
/// (lines as `tests/standins/lib.sh` reads them).
fn endpoint(name: &str, kesl: &[&str]) -> Lab {
    require_fanotify();
    let lab = Lab::new(&[name]);
    lab.kesl_endpoint(name, kesl);
    lab
}

fn clamd_conf(lab: &Lab, name: &str) -> String {
    lab.host(name).file("etc/clamav/clamd.conf")
}

fn lines_starting(text: &str, prefixes: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn after_the_migration_another_users_eicar_is_blocked_on_access_outside_the_exclusions() {
    let lab = endpoint(
        "nw-wms-db01",
        &[
            "/opt/app/data",
            "/srv/logs *.log",
            "/home/*/cache",
            "off /srv/old-exports",
            "process /usr/bin/rsync",
            "mount /mnt/nfs",
            "mount Mounted:NFS",
        ],
    );
    let host = lab.host("nw-wms-db01");
    let excluded = host.root().join("srv/wms/label queue");
    std::fs::create_dir_all(&excluded).unwrap();
    lab.env.give_tree(&host.root().join("srv"));
    let vars = json!({ "exclusions": {
        "linux": { "paths": [excluded, "/var/lib/postgresql/"], "extensions": [".bak"],
                   "processes": ["wmsagent"] },
        "windows": { "paths": ["D:\\WMS\\Data"], "extensions": [".mdf", ".pst"] },
    }});
    lab.inventory(CLAMAV, "northwind", json!({}), vars);
    let (run, report) = lab.run(CLAMAV, &[]);
    run.expect_code(0);

    // Real-time protection: the real clamonacc blocks another user's EICAR
    // in a watched folder, and leaves the excluded folder alone.
    let blocked = host
        .eicar_read_by_another_user("srv/eicar.com")
        .expect_err("EICAR must be blocked on access");
    assert!(blocked.contains("Operation not permitted"), "{blocked}");
    host.eicar_read_by_another_user("srv/wms/label queue/eicar.com")
        .expect("an excluded folder is not scanned on access");
    assert!(host.running("clamav-daemon") && host.running("clamav-clamonacc"));

    let conf = clamd_conf(&lab, "nw-wms-db01");
    let root = host.root().display().to_string();
    let escaped_root = root.replace('.', "\\.");
    assert_eq!(
        lines_starting(&conf, &["ExcludePath", "OnAccessExcludePath"]),
        {
            let mut want = vec![
                // The inventory's Linux paths and extension, in both syntaxes.
                format!("ExcludePath ^{escaped_root}/srv/wms/label queue(/|$)"),
                format!("OnAccessExcludePath {root}/srv/wms/label queue"),
                "ExcludePath ^/var/lib/postgresql(/|$)".to_string(),
                "OnAccessExcludePath /var/lib/postgresql".to_string(),
                r"ExcludePath \.bak$".to_string(),
                // KESL's: masks become regular expressions for clamd; what
                // only a mask can say has no on-access twin.
                "ExcludePath ^/opt/app/data(/|$)".to_string(),
                "OnAccessExcludePath /opt/app/data".to_string(),
                r"ExcludePath ^/srv/logs/(.*/)?[^/]*\.log$".to_string(),
                "ExcludePath ^/home/[^/]*/cache(/|$)".to_string(),
                "ExcludePath ^/mnt/nfs(/|$)".to_string(),
                "OnAccessExcludePath /mnt/nfs".to_string(),
            ];
            want.sort();
            want
        },
        "no Windows extension (.mdf, .pst), nothing switched off in KESL\n{conf}"
    );
    assert!(conf.contains("OnAccessPrevention yes\n"), "{conf}");
    assert!(
        conf.contains(&format!("OnAccessIncludePath {root}/srv\n")),
        "{conf}"
    );

    let h = host_report(&report, "nw-wms-db01");
    assert_eq!(h["status"], "succeeded");
    assert!(h["protection_gap_ms"].as_u64().is_some(), "{h:#}");
    let carried = step(h, "apply exclusions exported from KESL")["stdout"]
        .as_str()
        .unwrap_or_default();
    for lost in [
        "not carried: KESL /srv/old-exports: switched off in KESL (UseScanArea=No)",
        "not carried: KESL process exclusion /usr/bin/rsync",
        "not carried: KESL mount point exclusion Mounted:NFS",
        "not carried: KESL /home/*/cache on access: a mask",
        "not carried: KESL /srv/logs files *.log on access",
    ] {
        assert!(carried.contains(lost), "the step says `{lost}`:\n{carried}");
    }
    for name in [
        "on-access scanning blocks EICAR written by another user",
        "clamd is active and answering",
        "on-access scanning still blocks EICAR",
        "ClamAV signatures are current",
        "exclusions from the inventory are in the clamd config",
        "exclusions exported from KESL are in the clamd config",
        "a regular scan is scheduled",
        "no Kaspersky left on the host",
    ] {
        assert_eq!(step(h, name)["status"], "ok", "{name}");
    }
    let schedule = step(h, "schedule a regular scan")["stdout"]
        .as_str()
        .unwrap();
    assert!(schedule.contains("systemd timer"), "{schedule}");
    assert!(host.exists("etc/systemd/system/orchestrate-clamdscan.timer"));

    // freshclam fetched the mirror's database, and is pointed at the mirror.
    assert!(host.exists("var/lib/clamav/lab.hdb"));
    let freshclam = host.file("etc/clamav/freshclam.conf");
    assert!(
        freshclam.contains(&format!("PrivateMirror {}\n", lab.mirror.url)),
        "{freshclam}"
    );
    // Kaspersky is gone, by dpkg; its data folder archived, then deleted.
    assert!(!host.installed("kesl") && !host.installed("kesl-gui"));
    assert!(!host.installed("klnagent64"));
    assert!(!host.exists("var/opt/kaspersky"));
    assert!(host.exists("var/backups/orchestrate/kaspersky-folders.tar.gz"));
}

/// The host after a failed verify: rolled back, KESL and a managed Network
/// Agent back, ClamAV's on-access scanner out of KESL's way.
fn assert_rolled_back_to_kesl(lab: &Lab, name: &str, report: &Value, failed_step: &str) {
    let h = host_report(report, name);
    assert_eq!(h["status"], "failed", "{h:#}");
    assert_eq!(step(h, failed_step)["status"], "failed", "{h:#}");
    let rollback = h["rollback"].as_array().unwrap();
    assert!(
        rollback.iter().all(|r| r["status"] == "ok"),
        "{rollback:#?}"
    );
    let host = lab.host(name);
    assert!(
        host.installed("kesl") && host.running("kesl"),
        "KESL is back"
    );
    assert!(host.installed("klnagent64") && host.running("klnagent64"));
    assert_eq!(
        host.file("var/opt/kaspersky/klnagent64/server").trim(),
        KSC_SERVER,
        "the agent came back managed by its Administration Server"
    );
    assert!(!host.running("clamav-clamonacc"), "one on-access scanner");
}

/// Migrates `name`, with `fault` run on it between install and verify;
/// the run must fail (exit 1: rolled back).
fn migrate_with_fault(name: &str, fault: &str) -> (Lab, Value) {
    let lab = endpoint(name, &["/opt/app/data"]);
    lab.inventory(CLAMAV, "acme", json!({}), json!({ "exclusions": {} }));
    let playbook = with_fault_before_verify(&lab, CLAMAV, fault);
    let (run, report) = lab.run(&playbook, &[]);
    run.expect_code(1);
    (lab, report)
}

#[test]
fn clamonacc_stopped_after_the_install_fails_verify_and_kesl_comes_back() {
    let (lab, report) = migrate_with_fault("acme-lnx05", "systemctl stop clamav-clamonacc");
    assert_rolled_back_to_kesl(&lab, "acme-lnx05", &report, "on-access scanning is running");
    let h = host_report(&report, "acme-lnx05");
    assert_eq!(
        step(h, "on-access scanning blocks EICAR written by another user")["status"],
        "ok",
        "protected right after the install"
    );
}

#[test]
fn clamd_down_after_the_install_fails_verify_and_kesl_comes_back() {
    let (lab, report) = migrate_with_fault(
        "acme-lnx06",
        "systemctl kill --signal=SIGKILL clamav-daemon",
    );
    assert_rolled_back_to_kesl(&lab, "acme-lnx06", &report, "clamd is active and answering");
}

/// A clamd that hangs still accepts connections: `clamdscan --ping` (which
/// never reads the answer, clamdscan/client.c) says PONG, and systemd says
/// active. Only a scan through it shows that it does not answer.
#[test]
fn a_hung_clamd_that_still_answers_ping_fails_verify() {
    let (lab, report) = migrate_with_fault(
        "acme-lnx07",
        "systemctl kill --signal=SIGSTOP clamav-daemon",
    );
    let h = host_report(&report, "acme-lnx07");
    let answering = step(h, "clamd is active and answering");
    assert_eq!(answering["status"], "failed", "{h:#}");
    assert!(
        answering["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer within 3s"),
        "{answering:#}"
    );
    let host = lab.host("acme-lnx07");
    assert!(host.running("clamav-daemon"), "clamd is still there, hung");
    let conf = host.root().join("etc/clamav/clamd.conf");
    let ping = std::process::Command::new("clamdscan")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--ping", "1"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "--ping alone would have called this clamd fine"
    );
    assert!(
        host.installed("kesl") && host.running("kesl"),
        "KESL is back"
    );
}

#[test]
fn a_kesl_exclusion_switched_off_is_not_carried_over() {
    let lab = endpoint("nw-ws01", &["/opt/app/data", "off /srv/old-exports"]);
    lab.inventory(CLAMAV, "northwind", json!({}), json!({ "exclusions": {} }));
    let (run, report) = lab.run(CLAMAV, &["--check"]);
    run.expect_code(0);
    let h = host_report(&report, "nw-ws01");
    let listed = step(h, "list the exclusions to carry over")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        listed.contains("clamd: ExcludePath ^/opt/app/data(/|$)"),
        "{listed}"
    );
    assert!(
        !listed.contains("ExcludePath ^/srv/old-exports"),
        "switched off in KESL, so not excluded here: {listed}"
    );
    assert!(
        listed
            .contains("not carried: KESL /srv/old-exports: switched off in KESL (UseScanArea=No)"),
        "{listed}"
    );
}

#[test]
fn an_unknown_kaspersky_product_stops_the_host_before_anything_changes() {
    let lab = endpoint("nw-ws02", &["/opt/app/data"]);
    let host = lab.host("nw-ws02");
    let deb = linux_lab::debs::other_kaspersky_package(&host.root().join("tmp"));
    host.run_with(&["dpkg", "-i", deb.to_str().unwrap()], &[]);
    lab.env.give_tree(&host.state);
    lab.inventory(CLAMAV, "northwind", json!({}), json!({ "exclusions": {} }));
    let (run, report) = lab.run(CLAMAV, &[]);
    run.expect_code(1);
    let h = host_report(&report, "nw-ws02");
    let check = step(h, "no other Kaspersky product is installed");
    assert_eq!(check["status"], "failed", "{h:#}");
    assert!(
        check["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("kaspersky-scan-engine"),
        "{check:#}"
    );
    assert_only_precheck_ran(h);
    assert!(host.installed("kesl") && host.installed("kaspersky-scan-engine"));
    assert!(
        host.exists("opt/kaspersky/ScanEngine/bin/kavehost"),
        "the other product's files are untouched"
    );
}

#[test]
fn staged_network_agent_packages_without_its_server_stop_the_host_in_precheck() {
    let lab = endpoint("nw-ws03", &["/opt/app/data"]);
    let host = lab.host("nw-ws03");
    lab.inventory(CLAMAV, "northwind", json!({}), json!({ "exclusions": {} }));
    // The inventory forgot the server: a rollback would bring the agent back
    // unmanaged.
    let text = lab.scratch.path().join("inventory.yml");
    let mut inventory: Value =
        serde_json::from_str(&std::fs::read_to_string(&text).unwrap()).unwrap();
    inventory["clients"]["northwind"]["hosts"][0]["vars"]["klnagent_server"] = json!("");
    std::fs::write(&text, serde_json::to_string(&inventory).unwrap()).unwrap();
    let (run, report) = lab.run(CLAMAV, &[]);
    run.expect_code(1);
    let h = host_report(&report, "nw-ws03");
    let check = step(h, "a rollback can put Network Agent back managed");
    assert_eq!(check["status"], "failed", "{h:#}");
    assert!(
        check["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("klnagent_server is not set"),
        "{check:#}"
    );
    assert!(host.installed("kesl") && host.installed("klnagent64"));
}
