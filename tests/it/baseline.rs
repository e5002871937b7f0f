//! `baseline:` probes and the inventory's `must_reach`: every host read
//! before anything changes and again after verify, and what else changed
//! judged against what the playbook expects.
//!
//! The hosts are real: `local` hosts and OpenSSH `sshd` on loopback. The
//! "client software" is a real TCP listener (Python's `http.server`) on an
//! address of 127.0.0.0/8 of each test's own, which the playbook's install
//! step stops or leaves alone; the probe is the shipped one's `ss`
//! pipeline, narrowed to that address (every test shares this machine's
//! network). The reports are read as their readers read them: the JSON,
//! the JUnit XML through an XML parser, the HTML through headless Chromium.

use crate::harness::{self, Scratch};
use crate::support::sshd::SshdEnv;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A TCP listener standing in for the client's software (an ERP service,
/// a database): Python's `http.server`, on `address:port`.
struct Listener {
    child: Child,
    address: String,
    port: u16,
}

impl Listener {
    fn start(address: &str, port: u16, ids: Option<(u32, u32)>) -> Listener {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--bind", address, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the listener on {address}:{port} came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Listener {
            child,
            address: address.into(),
            port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A shell command that stops the listener and waits until its port
    /// is closed (a step's "install" that breaks the client's software).
    fn stop_command(&self) -> String {
        format!(
            "kill {pid}; bash -c 'for i in $(seq 200); do (exec 3<>/dev/tcp/{a}/{p}) 2>/dev/null || exit 0; sleep 0.05; done; exit 1'",
            pid = self.pid(),
            a = self.address,
            p = self.port
        )
    }

    fn target(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address of this test process's own (`n` tells a test's
/// addresses apart), away from the ones the sshd and WinRM fleets take.
fn address(n: u32) -> String {
    format!("127.77.{}.{}", std::process::id() % 250, n + 1)
}

/// The shipped Linux ports probe (playbooks/common/baseline-linux.yml),
/// narrowed to `address`.
fn ports_probe(address: &str, extra: &str) -> String {
    format!(
        r#"  - name: listening ports
    sh: |
      ss -Hltnup src {address} | awk '{{
        proc = $7; sub(/^users:\(\("/, "", proc); sub(/".*/, "", proc)
        print $1, $5, proc
      }}' | sort -u
    parse: lines
{extra}"#
    )
}

/// A playbook whose install step runs `install` (and whose rollback
/// leaves a mark in `{{ dir }}`), with `baseline` as its probes.
fn playbook(baseline: &str, install: &str) -> String {
    format!(
        r#"name: baseline test
baseline:
{baseline}
phases:
  - name: precheck
    steps:
      - name: look
        check_safe: true
        sh: echo looking
  - name: install
    steps:
      - name: install the new product
        sh: |
          {install}
        rollback:
          - name: undo the install
            sh: echo rolled back > {{{{ dir }}}}/rolled-back
  - name: verify
    steps:
      - name: new product runs
        sh: echo ok
"#
    )
}

fn local_inventory(scratch: &Scratch, extra: &str) -> std::path::PathBuf {
    let dir = scratch.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    scratch.write(
        "inventory.yml",
        &format!(
            "clients:\n  acme:\n{extra}    hosts:\n      - {{ name: acme-db01, address: 127.0.0.1, os: linux, transport: local, vars: {{ dir: '{}' }} }}\n",
            dir.display()
        ),
    )
}

fn run(scratch: &Scratch, extra: &[&str]) -> (harness::Run, Value) {
    let mut args = vec![
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--report-json",
        "report.json",
    ];
    args.extend_from_slice(extra);
    let run = scratch.orchestrate(&args);
    let report = serde_json::from_str(&scratch.read("report.json")).unwrap_or_else(|e| {
        panic!(
            "report.json ({e}); stdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    });
    (run, report)
}

fn host(report: &Value) -> &Value {
    &report["clients"][0]["hosts"][0]
}

fn probe<'a>(host: &'a Value, name: &str) -> &'a Value {
    host["baseline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["probe"] == name)
        .unwrap_or_else(|| panic!("no probe {name} in {}", host["baseline"]))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_install_that_stops_a_listening_service_fails_verify_names_port_and_process_and_rolls_back() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(0), 18080, None);
    scratch.write(
        "playbook.yml",
        &playbook(&ports_probe(&erp.address, ""), &erp.stop_command()),
    );
    local_inventory(&scratch, "");
    let (run, report) = run(&scratch, &[]);
    let h = host(&report);
    assert_eq!(h["status"], "failed", "{h}");
    run.expect_code(1);
    let error = h["error"].as_str().unwrap();
    assert!(
        error.contains("baseline") && error.contains(&format!("{}:18080", erp.address)),
        "{error}"
    );
    let ports = probe(h, "listening ports");
    assert_eq!(ports["status"], "regressed");
    let lost = strings(&ports["disappeared"]);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].starts_with(&format!("tcp {}:18080 python", erp.address)),
        "the port and its process: {lost:?}"
    );
    assert_eq!(
        strings(&ports["regressions"]),
        [format!("lost {}", lost[0])]
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("host/rolled-back")).unwrap(),
        "rolled back\n",
        "the install was rolled back"
    );
    assert_eq!(h["rollback"][0]["name"], "undo the install");
    // The summary says what was lost, too.
    assert!(run.stdout.contains("lost tcp"), "{}", run.stdout);
}

#[test]
fn the_new_products_own_service_appearing_is_expected_and_passes() {
    let scratch = Scratch::new();
    let address = address(1);
    let old = Listener::start(&address, 18081, None);
    // The "new product" is another listener on this address, started by
    // the install step and stopped when the test ends.
    let pid_file = scratch.path().join("new.pid");
    let install = format!(
        "kill {}; nohup python3 -m http.server --bind {address} 18082 >/dev/null 2>&1 & echo $! > {}; \
         for i in $(seq 100); do (exec 3<>/dev/tcp/{address}/18082) 2>/dev/null && break; sleep 0.1; done",
        old.pid(),
        pid_file.display()
    );
    let extra = format!(
        "    expect:\n      appear: [\"*:18082 python*\"]\n      disappear: [\"tcp {address}:18081 *\"]\n"
    );
    scratch.write(
        "playbook.yml",
        &playbook(
            &ports_probe(&address, &extra),
            &format!("bash -c '{install}'"),
        ),
    );
    local_inventory(&scratch, "");
    let (run, report) = run(&scratch, &[]);
    let new_pid = scratch.read("new.pid");
    let _ = Command::new("kill").arg(new_pid.trim()).status();
    run.expect_code(0);
    let h = host(&report);
    assert_eq!(h["status"], "succeeded", "{h}");
    let ports = probe(h, "listening ports");
    assert_eq!(ports["status"], "expected", "{ports}");
    assert!(
        strings(&ports["appeared"])[0].starts_with(&format!("tcp {address}:18082 python")),
        "{ports}"
    );
    assert_eq!(ports["regressions"], serde_json::json!([]));
    assert!(!scratch.path().join("host/rolled-back").exists());
}

#[test]
fn an_unreachable_must_reach_target_after_the_change_fails_the_host() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(2), 18083, None);
    // Still reachable: the change does not touch it.
    let files = Listener::start(&address(2), 18084, None);
    // No playbook probe at all: `must_reach` comes from the inventory.
    scratch.write(
        "playbook.yml",
        &playbook("  []", &erp.stop_command()).replace("baseline:\n  []\n", ""),
    );
    local_inventory(
        &scratch,
        &format!(
            "    must_reach: ['{}', '{}']\n",
            erp.target(),
            files.target()
        ),
    );
    let (run, report) = run(&scratch, &[]);
    let h = host(&report);
    assert_eq!(h["status"], "failed", "{h}");
    run.expect_code(1);
    let reach = probe(h, "must_reach");
    assert_eq!(strings(&reach["disappeared"]), [erp.target()]);
    assert_eq!(reach["items_after"], 1, "the file server is still reached");
    assert!(
        h["error"].as_str().unwrap().contains(&erp.target()),
        "{}",
        h["error"]
    );
    assert!(scratch.path().join("host/rolled-back").exists());
}

#[test]
fn on_regression_warn_succeeds_and_flags_in_the_summary_json_and_junit() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(3), 18085, None);
    scratch.write(
        "playbook.yml",
        &playbook(
            &ports_probe(&erp.address, "    on_regression: warn\n"),
            &erp.stop_command(),
        ),
    );
    local_inventory(&scratch, "");
    let (run, report) = run(&scratch, &[]);
    run.expect_code(0);
    let h = host(&report);
    assert_eq!(h["status"], "succeeded", "{h}");
    let ports = probe(h, "listening ports");
    assert_eq!(ports["status"], "regressed");
    assert_eq!(ports["on_regression"], "warn");
    assert!(
        run.stdout
            .contains("warning acme-db01: baseline `listening ports`: lost tcp"),
        "{}",
        run.stdout
    );
    assert!(!scratch.path().join("host/rolled-back").exists());

    // `report --format junit` from the journal: the host passes, its
    // baseline case fails with the diff.
    let run_id = scratch.newest_run_id();
    let junit = scratch.orchestrate(&["report", &run_id, "--format", "junit"]);
    junit.expect_code(0);
    let doc = roxmltree::Document::parse(&junit.stdout).unwrap();
    let case = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no test case {name}:\n{}", junit.stdout))
    };
    assert!(
        !case("acme-db01")
            .children()
            .any(|c| c.has_tag_name("failure"))
    );
    let failure = case("acme-db01 baseline")
        .children()
        .find(|c| c.has_tag_name("failure"))
        .expect("the regression is a failure");
    assert_eq!(failure.attribute("type"), Some("baseline_warning"));
    let body = failure.text().unwrap();
    assert!(
        body.contains(&format!("!- tcp {}:18085 python", erp.address)),
        "{body}"
    );
}

#[test]
fn check_records_the_baseline_and_the_dry_run_lists_the_probes() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(4), 18086, None);
    scratch.write(
        "playbook.yml",
        &playbook(&ports_probe(&erp.address, ""), "echo would change"),
    );
    local_inventory(&scratch, &format!("    must_reach: ['{}']\n", erp.target()));
    let dry = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("baseline (before the first step"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("- listening ports  [check-safe"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("- must_reach"), "{}", dry.stdout);
    assert!(dry.stdout.contains("/dev/tcp"), "{}", dry.stdout);
    let plan = scratch.plan_json("playbook.yml", "inventory.yml");
    let probes = &plan["clients"][0]["hosts"][0]["baseline"];
    assert_eq!(probes[0]["probe"], "listening ports");
    assert_eq!(probes[0]["check_safe"], true);
    assert_eq!(probes[1]["probe"], "must_reach");

    let (run, report) = run(&scratch, &["--check"]);
    run.expect_code(0);
    let h = host(&report);
    let ports = probe(h, "listening ports");
    assert_eq!(ports["status"], "recorded");
    assert_eq!(ports["items_before"], 1);
    assert_eq!(probe(h, "must_reach")["items_before"], 1);
    // Journaled: the report rebuilt from the journal has it too.
    let journaled = scratch.journaled_report();
    assert_eq!(
        journaled["clients"][0]["hosts"][0]["baseline"][0]["status"],
        "recorded"
    );
}

#[test]
fn the_html_report_shows_what_changed_besides_the_antivirus() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(5), 18087, None);
    scratch.write(
        "playbook.yml",
        &playbook(&ports_probe(&erp.address, ""), &erp.stop_command()),
    );
    local_inventory(&scratch, "");
    let (run, _) = run(&scratch, &[]);
    run.expect_code(1);
    let run_id = scratch.newest_run_id();
    let page = scratch.path().join("report.html");
    scratch
        .orchestrate(&[
            "report",
            &run_id,
            "--format",
            "html",
            "-o",
            page.to_str().unwrap(),
        ])
        .expect_code(0);
    let dom = crate::report_render::rendered_dom(&page);
    let doc = scraper::Html::parse_document(&dom);
    let text: String = doc.root_element().text().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("What changed besides the antivirus"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "0 of 1 host unchanged; 1 lost tcp {}:18087 python",
            erp.address
        )),
        "the client's summary: {text}"
    );
    let regression = doc
        .select(&scraper::Selector::parse(".baseline li.regression").unwrap())
        .next()
        .expect("the lost port is marked a regression");
    let item: String = regression.text().collect();
    assert!(item.contains(&format!("{}:18087", erp.address)), "{item}");
}

#[test]
fn over_ssh_a_stopped_service_fails_the_host_and_an_untouched_one_passes() {
    let env = SshdEnv::new();
    let (_servers, hosts) = env.fleet(2);
    env.trust(&hosts);
    let scratch = Scratch::new();
    // Each host has its own listener, owned by the user the hosts log in
    // as (ss names only the processes of the user asking).
    let listeners: Vec<Listener> = (0..2)
        .map(|i| Listener::start(&address(10 + i), 18090, env.ids()))
        .collect();
    let mut inventory = env.inventory(&hosts, |i| format!("h{:02}", i + 1));
    // Per host: its listener's address, and what the install does.
    for (i, l) in listeners.iter().enumerate() {
        let dir = scratch.path().join(format!("h{:02}", i + 1));
        std::fs::create_dir_all(&dir).unwrap();
        env.give(&dir);
        let install = if i == 0 {
            l.stop_command().replace('\'', "''")
        } else {
            "true".to_string()
        };
        inventory = inventory.replacen(
            "os: linux }",
            &format!(
                "os: linux, vars: {{ probe_address: '{}', install: '{install}', dir: '{}' }} }}",
                l.address,
                dir.display()
            ),
            1,
        );
    }
    scratch.write("inventory.yml", &inventory);
    scratch.write(
        "playbook.yml",
        &playbook(&ports_probe("{{ probe_address }}", ""), "{{ install }}").replacen(
            "name: baseline test\n",
            "name: baseline test\nwaves: [\"100%\"]\nfailure_budget: 1\n",
            1,
        ),
    );
    let (run, report) = run(&scratch, &[]);
    run.expect_code(1);
    let hosts = report["clients"][0]["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["status"], "failed", "{}", hosts[0]);
    let lost = strings(&probe(&hosts[0], "listening ports")["disappeared"]);
    assert!(
        lost.len() == 1
            && lost[0].starts_with(&format!("tcp {}:18090 python", listeners[0].address)),
        "{lost:?}"
    );
    assert!(scratch.path().join("h01/rolled-back").exists());
    assert_eq!(hosts[1]["status"], "succeeded", "{}", hosts[1]);
    assert_eq!(probe(&hosts[1], "listening ports")["status"], "unchanged");
}

#[test]
fn probe_mistakes_are_errors_at_their_line_and_column() {
    let scratch = Scratch::new();
    local_inventory(
        &scratch,
        "    must_reach: ['erp.acme.local', '10.1.0.10:445']\n",
    );
    let validate = |playbook: &str| {
        scratch.write("playbook.yml", playbook);
        let run = scratch.orchestrate(&["validate", "playbook.yml", "-i", "inventory.yml"]);
        run.expect_code(2);
        format!("{}{}", run.stdout, run.stderr)
    };
    let all = validate(
        "name: x\nbaseline:\n  - name: ports\n    sh: true\n    expect: { apear: ['*'] }\nphases:\n  - name: p\n    steps: []\n",
    );
    assert!(
        all.contains("playbook.yml:5:15") && all.contains("unknown field `apear`"),
        "{all}"
    );
    let all = validate(
        "name: x\nbaseline:\n  - name: ports\n    sh: ss -ltn\n    key: Name\nphases:\n  - name: p\n    steps: []\n",
    );
    assert!(all.contains("playbook.yml:5:10"), "{all}");
    assert!(all.contains("goes with `parse: json`"), "{all}");

    let all = validate(
        "name: x\nbaseline:\n  - name: ports\n    sh: ss -ltn\n  - name: ports\n    sh: 'true'\nphases:\n  - name: p\n    steps: []\n",
    );
    assert!(all.contains("playbook.yml:5:5"), "{all}");
    assert!(all.contains("a second probe named `ports`"), "{all}");
    let all = validate("name: x\nphases:\n  - name: p\n    steps: []\n");
    assert!(all.contains("inventory.yml:3:18"), "{all}");
    assert!(
        all.contains("`erp.acme.local` is not a host:port target"),
        "{all}"
    );
}

/// The shipped Windows probes over WinRM, their output in the documented
/// shapes (tests/it/windows_fleet: `baseline_entries`): parsed into items,
/// unchanged on a host where nothing else changed, and a port lost by the
/// change (SQL Server's 1433) fails the Defender playbook's verify and
/// rolls the host back.
#[test]
fn windows_probes_parse_the_cmdlets_json_and_a_lost_sql_server_port_fails_the_host() {
    use crate::windows_fleet::{Fleet, baseline_ports, defender_table, entry};

    let mut table = defender_table();
    // ws02 loses 1433 after the change: its first answer (before) has it.
    let mut before = entry(
        "baseline: listening ports before",
        r"Get-NetTCPConnection -State Listen",
        &baseline_ports(true),
        0,
    );
    before["times"] = serde_json::json!(1);
    let mut after = entry(
        "baseline: listening ports after",
        r"Get-NetTCPConnection -State Listen",
        &baseline_ports(false),
        0,
    );
    after["hosts"] = serde_json::json!({ "ws01": { "stdout": baseline_ports(true) } });
    table.insert(0, after);
    table.insert(0, before);
    let fleet = Fleet::start(&["ws01", "ws02"], &table);
    fleet.inventory(
        "acme",
        r#"["100%"]"#,
        "1",
        "{ exclusions: { paths: ['D:\\Dentrix\\Data'], processes: [DtxSvc.exe] } }",
    );
    let (run, report) = fleet.run("windows-kes-to-defender.yml", &[]);
    let hosts = report["clients"][0]["hosts"].as_array().unwrap();
    let (ws01, ws02) = (&hosts[0], &hosts[1]);
    assert_eq!(ws02["status"], "failed", "{}", ws02["rollback"]);
    run.expect_code(1);
    assert_eq!(ws01["status"], "succeeded", "{ws01}");
    for (name, items) in [
        ("listening ports", 5),
        ("running services", 4),
        ("firewall profiles", 3),
        ("dns", 0),
    ] {
        let p = probe(ws01, name);
        assert_eq!(p["status"], "unchanged", "{p}");
        assert_eq!(p["items_before"], items, "{p}");
    }
    assert_eq!(ws02["status"], "failed", "{ws02}");
    let ports = probe(ws02, "listening ports");
    assert_eq!(
        strings(&ports["regressions"]),
        ["lost Protocol=TCP LocalAddress=0.0.0.0 LocalPort=1433 Process=sqlservr"]
    );
    assert!(
        ws02["error"]
            .as_str()
            .unwrap()
            .contains("LocalPort=1433 Process=sqlservr"),
        "{}",
        ws02["error"]
    );
    assert!(
        !ws02["rollback"].as_array().unwrap().is_empty(),
        "rolled back: {ws02}"
    );
}

/// A run killed (SIGKILL) after the change and resumed compares with the
/// host as it was before it was first touched (the "before" is in the
/// journal), not with a baseline taken again from the changed host.
#[test]
fn a_resumed_host_compares_with_the_journaled_baseline_from_before_the_change() {
    let scratch = Scratch::new();
    let erp = Listener::start(&address(6), 18088, None);
    let marker = scratch.path().join("changed");
    // The first time: stop the service, then be slow (killed here); on
    // resume the step runs again and ends at once.
    let install = format!(
        "if [ ! -e {m} ]; then {}; touch {m}; sleep 3; fi",
        erp.stop_command(),
        m = marker.display()
    );
    scratch.write(
        "playbook.yml",
        &playbook(&ports_probe(&erp.address, ""), &install),
    );
    local_inventory(&scratch, "");
    let mut child = scratch.spawn(&["run", "playbook.yml", "-i", "inventory.yml"]);
    harness::wait_for("the install to have stopped the service", || {
        marker.exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL: the host is left mid-way
    child.wait().unwrap();
    let run_id = scratch.newest_run_id();
    // The resumed host runs its install again (it had not completed), then
    // compares.
    let resumed = scratch.orchestrate(&["resume", &run_id, "--report-json", "report.json"]);
    let report: Value = serde_json::from_str(&scratch.read("report.json")).unwrap();
    let h = host(&report);
    let ports = probe(h, "listening ports");
    assert_eq!(ports["items_before"], 1, "the journaled before: {ports}");
    assert_eq!(ports["status"], "regressed", "{ports}");
    assert_eq!(h["status"], "failed", "{h}");
    resumed.expect_code(1);
}

/// A probe's output is redacted like a step's: a secret the endpoint
/// prints is `***` in the report and the journal, in every item.
#[test]
fn a_secret_in_a_probes_output_is_masked_in_the_report_and_the_journal() {
    let scratch = Scratch::new();
    scratch.write(
        "playbook.yml",
        &playbook(
            "  - name: agent token\n    sh: echo \"token {{ secret(name='AGENT_TOKEN') }}\"\n",
            "echo changed",
        ),
    );
    local_inventory(&scratch, "");
    let run = scratch.orchestrate_env(
        &[
            "run",
            "playbook.yml",
            "-i",
            "inventory.yml",
            "--report-json",
            "report.json",
        ],
        &[("AGENT_TOKEN", "s3cr3t-t0ken-value")],
    );
    run.expect_code(0);
    let report = scratch.read("report.json");
    assert!(!report.contains("s3cr3t-t0ken-value"), "{report}");
    let parsed: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(probe(host(&parsed), "agent token")["status"], "unchanged");
    // The journal and its write-ahead log, as bytes on disk.
    let mut journal = std::fs::read(scratch.path().join(harness::JOURNAL)).unwrap();
    journal.extend(
        std::fs::read(scratch.path().join(format!("{}-wal", harness::JOURNAL))).unwrap_or_default(),
    );
    let journal = String::from_utf8_lossy(&journal);
    assert!(
        !journal.contains("s3cr3t-t0ken-value"),
        "the journal holds the secret"
    );
    assert!(
        journal.contains(r#""text":"token ***""#),
        "the probe's item is journaled, masked"
    );
    let journaled = scratch.journaled_report();
    assert!(!journaled.to_string().contains("s3cr3t-t0ken-value"));
}
