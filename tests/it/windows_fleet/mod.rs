//! A simulated Windows fleet for the playbook flow tests: the WinRM test
//! endpoint (tests/winrm_endpoint/server.py) serving several hosts on
//! loopback addresses, answering every PowerShell script of a playbook from
//! a table of responses shaped like real Windows output, and logging every
//! script it received, per host, in order.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{self, Scratch};

pub const WINRM_PASSWORD: &str = "Fl33t-pw";

/// One script a host received, from the endpoint's log.
#[derive(Debug, Clone)]
pub struct Received {
    pub seq: u64,
    pub host: String,
    /// powershell, upload, remove, reboot, down, up
    pub kind: String,
    pub script: String,
    /// The command line the script came with (the script itself came by Send).
    pub command_line: String,
    /// The table entry that answered.
    pub response: Option<String>,
}

pub struct Fleet {
    pub scratch: Scratch,
    child: Child,
    /// (host name, address, port)
    pub hosts: Vec<(String, String, u16)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// Starts one endpoint serving `hosts` (names), each on its own
    /// loopback address, answering from `table`.
    pub fn start(hosts: &[&str], table: &[Value]) -> Fleet {
        let scratch = Scratch::new();
        let table_path = scratch.write(
            "responses.json",
            &serde_json::to_string_pretty(table).unwrap(),
        );
        let server = harness::repo().join("tests/winrm_endpoint/server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(server)
            .arg("--root")
            .arg(scratch.path().join("root"))
            .args(["--auth", "ntlm", "--user", "MSP\\msp-admin"])
            .args(["--password", WINRM_PASSWORD, "--reboot-delay", "1"])
            .arg("--responses")
            .arg(&table_path)
            .arg("--log")
            .arg(scratch.path().join("received.jsonl"));
        // A distinct address per test process and host keeps runs apart.
        let base = 10 + (std::process::id() % 200) as usize;
        for (i, host) in hosts.iter().enumerate() {
            cmd.args(["--host", &format!("{host}=127.0.{}.{}", base, i + 2)]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the WinRM test endpoint (scripts/deps/winrm.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut listening = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["LISTENING", port, address] => {
                    listening.push((address.to_string(), port.parse::<u16>().unwrap()))
                }
                ["READY"] => break,
                _ => {}
            }
        }
        assert_eq!(listening.len(), hosts.len(), "the endpoint listens");
        // Keep draining its output (REBOOTED lines) so it never blocks.
        std::thread::spawn(move || for _ in lines {});
        let hosts = hosts
            .iter()
            .zip(listening)
            .map(|(h, (a, p))| (h.to_string(), a, p))
            .collect();
        Fleet {
            scratch,
            child,
            hosts,
        }
    }

    /// An inventory with one client holding every host, reached over WinRM
    /// (NTLM, sealed HTTP), waves of `waves`, no pause between them.
    /// `client_vars` and `host_vars` are YAML flow mappings.
    pub fn inventory(&self, client: &str, waves: &str, budget: &str, client_vars: &str) {
        self.inventory_with_host_vars(client, waves, budget, client_vars, &[]);
    }

    /// [`Fleet::inventory`], with `vars` (a YAML flow mapping) on the hosts
    /// named in `host_vars`.
    pub fn inventory_with_host_vars(
        &self,
        client: &str,
        waves: &str,
        budget: &str,
        client_vars: &str,
        host_vars: &[(&str, &str)],
    ) {
        let mut text = format!(
            "defaults:\n  transport: winrm\n  user: 'MSP\\msp-admin'\n  \
             winrm: {{ tls: false, auth: ntlm, password_secret: WINRM_PASSWORD }}\n\
             clients:\n  {client}:\n    waves: {waves}\n    failure_budget: {budget}\n    \
             pause_between_waves: 0s\n    vars: {client_vars}\n    hosts:\n"
        );
        for (name, address, port) in &self.hosts {
            let vars = host_vars
                .iter()
                .find(|(h, _)| h == name)
                .map(|(_, v)| format!(", vars: {v}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "      - {{ name: {name}, address: {address}, port: {port}, os: windows{vars} }}\n"
            ));
        }
        self.scratch.write("inventory.yml", &text);
    }

    /// `orchestrate run PLAYBOOK -i inventory.yml` with the secrets the
    /// Windows playbooks read; returns the run and its JSON report.
    pub fn run(&self, playbook: &str, extra: &[&str]) -> (harness::Run, Value) {
        self.run_with_env(playbook, extra, &[])
    }

    /// [`Fleet::run`] with more secrets in the environment.
    pub fn run_with_env(
        &self,
        playbook: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (harness::Run, Value) {
        let playbook = harness::repo().join("playbooks").join(playbook);
        let playbook = playbook.to_str().unwrap();
        let mut args = vec![
            "run",
            playbook,
            "-i",
            "inventory.yml",
            "--yes",
            "--report-json",
            "report.json",
        ];
        args.extend_from_slice(extra);
        let mut secrets = vec![
            ("WINRM_PASSWORD", WINRM_PASSWORD),
            ("KES_PASSWORD", "kes-Secret-1"),
            ("FALCON_CID", "0123456789ABCDEF0123456789ABCDEF-12"),
        ];
        secrets.extend_from_slice(env);
        let run = self.scratch.orchestrate_env(&args, &secrets);
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

    /// Everything the endpoint received, in order.
    pub fn received(&self) -> Vec<Received> {
        let path: PathBuf = self.scratch.path().join("received.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Received {
                    seq: v["seq"].as_u64().unwrap(),
                    host: v["host"].as_str().unwrap().to_string(),
                    kind: v["kind"].as_str().unwrap().to_string(),
                    script: v["script"].as_str().unwrap().to_string(),
                    command_line: v["command_line"].as_str().unwrap_or("").to_string(),
                    response: v["response"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// The script the table entry `response` answered on `host`.
    pub fn script(&self, host: &str, response: &str) -> String {
        self.received()
            .into_iter()
            .find(|r| r.host == host && r.response.as_deref() == Some(response))
            .unwrap_or_else(|| panic!("{response} on {host}"))
            .script
    }

    /// The names of the table entries that answered `host`, in order, with
    /// `reboot` where the host went down and came back.
    pub fn answered(&self, host: &str) -> Vec<String> {
        // The baseline probes (answered by `baseline_entries`) run before
        // the first step and after the last on every host, and the runner
        // asks who is logged on before each reboot (`runner: ` entries);
        // the playbooks' own steps are what these lists are about.
        self.answered_all(host)
            .into_iter()
            .filter(|name| !name.starts_with("baseline: ") && !name.starts_with("runner: "))
            .collect()
    }

    /// [`Fleet::answered`] with the baseline probes.
    pub fn answered_all(&self, host: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.host == host)
            .filter_map(|r| match r.kind.as_str() {
                "powershell" => Some(r.response.unwrap_or_else(|| "UNANSWERED".into())),
                "down" => Some("reboot".into()),
                _ => None,
            })
            .collect()
    }
}

/// Changes fields of the table entry named `name` (for `hosts`, merges).
pub fn set(table: &mut [Value], name: &str, fields: Value) {
    let entry = table
        .iter_mut()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no table entry {name}"));
    for (k, v) in fields.as_object().unwrap() {
        entry[k] = v.clone();
    }
}

pub fn entry(name: &str, pattern: &str, stdout: &str, exit_code: i32) -> Value {
    json!({ "name": name, "match": pattern, "stdout": stdout, "exit_code": exit_code })
}

/// The baseline probes of `playbooks/common/baseline-windows.yml`, answered
/// the same before and after the change (nothing else changed), each in
/// the shape its cmdlet's objects take through `ConvertTo-Json -Compress`
/// (Windows PowerShell 5.1: a list, or one object for a single item).
/// Matched first: the probes' scripts also name cmdlets other entries match.
pub fn baseline_entries() -> Vec<Value> {
    vec![
        // Get-NetTCPConnection -State Listen / Get-NetUDPEndpoint
        // (learn.microsoft.com/powershell/module/nettcpip/get-nettcpconnection,
        // .../get-netudpendpoint): LocalAddress, LocalPort (UInt16) and
        // OwningProcess, named from Get-Process; System owns 445, svchost
        // 135 (RPC endpoint mapper), Network Agent 15000 (KSC's default
        // agent port, KSC 14 help "Ports used by Kaspersky Security Center").
        entry(
            "baseline: listening ports",
            r"Get-NetTCPConnection -State Listen",
            &baseline_ports(true),
            0,
        ),
        // Get-Service (learn.microsoft.com/powershell/module/
        // microsoft.powershell.management/get-service): Name, DisplayName.
        entry(
            "baseline: running services",
            r"Select-Object Name, DisplayName \| ConvertTo-Json",
            r#"[{"Name":"Dnscache","DisplayName":"DNS Client"},{"Name":"LanmanServer","DisplayName":"Server"},{"Name":"MSSQLSERVER","DisplayName":"SQL Server (MSSQLSERVER)"},{"Name":"WinRM","DisplayName":"Windows Remote Management (WS-Management)"}]"#,
            0,
        ),
        // Get-NetFirewallProfile (learn.microsoft.com/powershell/module/
        // netsecurity/get-netfirewallprofile): Name, Enabled (GpoBoolean,
        // "True"), DefaultInboundAction (Block by default).
        entry(
            "baseline: firewall profiles",
            r"EnabledInboundRules = ",
            r#"[{"Name":"Domain","Enabled":"True","DefaultInboundAction":"NotConfigured","EnabledInboundRules":41},{"Name":"Private","Enabled":"True","DefaultInboundAction":"NotConfigured","EnabledInboundRules":38},{"Name":"Public","Enabled":"True","DefaultInboundAction":"NotConfigured","EnabledInboundRules":22}]"#,
            0,
        ),
        // No must_reach names in these inventories: nothing printed.
        entry(
            "baseline: dns",
            r"the names of must_reach that resolve here",
            "",
            0,
        ),
        // Who is logged on, asked by the runner before a reboot: quser
        // ("query user", Microsoft's command reference) exits 1 with "No
        // User exists for *" on stderr when nobody is (merged into stdout
        // by the script); see `logged_on_users` for a host in use.
        entry(
            "runner: logged-on users",
            r"System32\\quser\.exe",
            "No User exists for *
",
            1,
        ),
    ]
}

/// quser's answer on a host where `users` (name, session) are logged on
/// (an empty session: disconnected): its header, then one line per
/// session, the current one marked `>`, exit 0 (Microsoft, "query user").
pub fn logged_on_users(users: &[(&str, &str)]) -> Value {
    let mut text = String::from(
        " USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME\r\n",
    );
    for (i, (name, session)) in users.iter().enumerate() {
        let state = if session.is_empty() { "Disc" } else { "Active" };
        text.push_str(&format!(
            " {name:<21} {session:<18} {:>2}  {state:<6}      none   12/2/2026 8:01 AM\r\n",
            i + 1
        ));
    }
    json!({ "stdout": text, "exit_code": 0 })
}

/// The listening-ports probe's answer: SQL Server on 1433 or not.
pub fn baseline_ports(sql_server: bool) -> String {
    let mut ports = vec![
        json!({"Protocol":"TCP","LocalAddress":"0.0.0.0","LocalPort":135,"Process":"svchost"}),
        json!({"Protocol":"TCP","LocalAddress":"0.0.0.0","LocalPort":445,"Process":"System"}),
        json!({"Protocol":"TCP","LocalAddress":"0.0.0.0","LocalPort":15000,"Process":"klnagent"}),
        json!({"Protocol":"UDP","LocalAddress":"0.0.0.0","LocalPort":"dynamic","Process":"svchost"}),
    ];
    if sql_server {
        ports.push(json!({"Protocol":"TCP","LocalAddress":"0.0.0.0","LocalPort":1433,"Process":"sqlservr"}));
    }
    Value::Array(ports).to_string()
}

/// A Windows 11 workstation with KES 12 and Network Agent 14, as the
/// registry, CIM, netsh and Defender cmdlets describe it, before and after.
/// Shared by the Kaspersky precheck and uninstall phases of every Windows
/// playbook.
pub fn kaspersky_host() -> Vec<Value> {
    let products = json!({
        "products": [
            { "name": "Kaspersky Endpoint Security for Windows", "version": "12.6.0.438",
              "code": "{8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C}",
              "key": "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C}" },
            { "name": "Kaspersky Security Center Network Agent", "version": "14.2.0.26967",
              "code": "{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}",
              "key": "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}" }
        ],
        "kes": ["{8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C}"],
        "agent": ["{2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B}"],
        "unhandled": []
    });
    let osinfo = os_info("Microsoft Windows 11 Pro", "22631", 1);
    let firewall = json!([{ "name": "Domain", "enabled": true },
        { "name": "Private", "enabled": true }, { "name": "Public", "enabled": true }]);
    let mut table = baseline_entries();
    table.extend(vec![
        // on_failure reads Security Center too: matched before "no Kaspersky left".
        // What runs after a rollback, as services, drivers and Security Center
        // show it: here nothing (the Defender-on step then runs). A stale
        // entry of a removed antivirus stays in root/SecurityCenter2 until it
        // is removed (Microsoft, "Defender Antivirus compatibility with other
        // security products": Defender stays off while another antivirus is
        // registered; DOMAIN.md, "Traps").
        entry(
            "antivirus engines",
            r"stale_kaspersky\s+=",
            r#"{"running":[],"stale":[],"stale_kaspersky":[]}"#,
            0,
        ),
        // Remove-CimInstance of the stale instance prints nothing and exits 0.
        entry(
            "clear stale entries",
            r"Where-Object \{ \$names -contains",
            "removed from Security Center: Kaspersky Endpoint Security for Windows\r\n",
            0,
        ),
        entry(
            "some antivirus on",
            r"NO ANTIVIRUS IS PROTECTING THIS HOST",
            "Defender real-time protection is on.\r\n",
            0,
        ),
        entry(
            "find products",
            r"DisplayName -like 'UltraAV\*'",
            &products.to_string(),
            0,
        ),
        entry("os info", r"Win32_OperatingSystem", &osinfo.to_string(), 0),
        entry(
            "firewall state",
            r"-InputObject @\(Get-NetFirewallProfile",
            &firewall.to_string(),
            0,
        ),
        entry(
            "firewall export",
            r"netsh advfirewall export",
            "Windows Firewall policy saved to C:\\ProgramData\\MSP\\orchestrate\\firewall-before-kes-removal-20261122-081500.wfw\r\n",
            0,
        ),
        // icacls /inheritance:r /grant:r on a folder the admin owns exits 0
        // ("Successfully processed 1 files"; Microsoft, "icacls" command
        // reference); the ACL then holds only the two SIDs granted.
        entry(
            "log folder",
            r"installer logs go to \$dir",
            "installer logs go to C:\\ProgramData\\MSP\\orchestrate\\logs (Administrators and SYSTEM only)\r\n",
            0,
        ),
        // The uninstall steps call MsiConfigureProductExW in their own
        // PowerShell process (no msiexec command line); it returns 0 once
        // the product is removed, 1605 (ERROR_UNKNOWN_PRODUCT) if it is not
        // installed, 3010 / 1641 when a reboot is needed / started, 1618
        // while another installation runs, 1603 on a fatal error - the
        // codes msiexec exits with (Microsoft, "MsiConfigureProductExW",
        // learn.microsoft.com/windows/win32/api/msi/nf-msi-msiconfigureproductexw,
        // and "Error codes", .../windows/win32/msi/error-codes); the script
        // exits with it. The verbose log (MsiEnableLog) goes to the private
        // log folder.
        entry(
            "msiexec KES",
            r"kes-uninstall-",
            "MsiConfigureProductEx {8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C} absent -> 0 (log: C:\\ProgramData\\MSP\\orchestrate\\logs\\kes-uninstall-8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C.log)\r\n",
            0,
        ),
        entry(
            "msiexec Network Agent",
            r"klnagent-uninstall-",
            "MsiConfigureProductEx {2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B} absent -> 0 (log: C:\\ProgramData\\MSP\\orchestrate\\logs\\klnagent-uninstall-2924BEDA-E0D7-4DAF-A224-50D2E0B12F5B.log)\r\n",
            0,
        ),
        entry(
            "pending reboot",
            r"Component Based Servicing\\RebootPending",
            "No Kaspersky driver loaded and no reboot pending.\r\n",
            0,
        ),
        entry(
            "no Kaspersky left",
            r"root/SecurityCenter2",
            "Kaspersky is gone\r\n",
            0,
        ),
        entry(
            "firewall on",
            r"\$now = Get-NetFirewallProfile",
            "Domain: before=True now=True\r\nPrivate: before=True now=True\r\nPublic: before=True now=True\r\n",
            0,
        ),
        entry(
            "KES back",
            r"Kaspersky was not put back",
            "KES reinstall exit code: 0\r\n",
            0,
        ),
        entry(
            "Network Agent back",
            r"No Network Agent package staged",
            "Network Agent reinstall exit code: 0\r\n",
            0,
        ),
    ]);
    table
}

/// The precheck's "record OS type and Defender state" answer for a host of
/// that caption, build and ProductType (1 workstation, 3 server), with no
/// policy in the way: change fields to put one there.
pub fn os_info(caption: &str, build: &str, product_type: i64) -> Value {
    let server = product_type != 1;
    // OperatingSystemSKU: 48 Professional, 7 Server Standard (GetProductInfo).
    let sku = if server { 7 } else { 48 };
    json!({ "caption": caption, "build": build, "product_type": product_type, "sku": sku,
        "is_server": server, "ps_version": "5.1.22621.4391", "windefend_present": !server,
        "windefend_status": if server { "missing" } else { "Stopped" },
        "gpo_disables_defender": false, "force_passive_mode": false,
        "local_admin_merge_disabled": false, "tamper_protected_exclusions": false,
        // $ExecutionContext.SessionState.LanguageMode of a remote session
        // with no application-control policy (Microsoft, about_Language_Modes).
        "language_mode": "FullLanguage" })
}

/// `Get-MpComputerStatus` (with the WinDefend service) as the verify steps
/// read it: Defender active, real-time on, signatures of today.
pub fn defender_status() -> Value {
    json!({ "WinDefend": "Running", "AMServiceEnabled": true, "AntivirusEnabled": true,
        "RealTimeProtectionEnabled": true, "AMRunningMode": "Normal",
        "AntivirusSignatureVersion": "1.421.1502.0", "AntivirusSignatureAge": 0,
        "DefenderSignaturesOutOfDate": false })
}

/// The host's status in the report, by name.
pub fn host<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hosts"].as_array().unwrap())
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("{name} in the report"))
}

/// (step name, status) of a host in the report.
pub fn steps(report: &Value, name: &str) -> Vec<(String, String)> {
    records(report, name, "steps")
}

/// (step name, status) of a host's rollback (and on_failure) in the report.
pub fn rollback(report: &Value, name: &str) -> Vec<(String, String)> {
    records(report, name, "rollback")
}

fn records(report: &Value, name: &str, list: &str) -> Vec<(String, String)> {
    host(report, name)[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The Defender playbook's install and verify steps, answered as on a
/// host where everything works.
pub fn defender_table() -> Vec<Value> {
    let mut table = kaspersky_host();
    table.extend([
        entry(
            "enable Defender feature",
            r"Dism\.exe /Online /Enable-Feature",
            "Windows-Defender feature state: Disabled\r\nDism exit code: 3010\r\n",
            3010,
        ),
        entry(
            "turn Defender on",
            r"rebooting once",
            "Defender is active (Normal).\r\n",
            0,
        ),
        entry(
            "confirm real-time",
            r"AMRunningMode=\{0\} AntivirusEnabled",
            "AMRunningMode=Normal AntivirusEnabled=True RealTimeProtectionEnabled=True\r\n",
            0,
        ),
        entry(
            "add exclusions",
            r"Write-Output 'exclusions applied'",
            "paths: D:\\Dentrix\\Data\r\nprocesses: 1 added\r\nexclusions applied\r\n",
            0,
        ),
        entry(
            "update signatures",
            r"Update-MpSignature",
            "Signatures: 1.421.1502.0, age 0 day(s)\r\n",
            0,
        ),
        entry(
            "Defender status",
            r"DefenderSignaturesOutOfDate = ",
            &defender_status().to_string(),
            0,
        ),
        entry(
            "exclusions read back",
            r"\$pref = Get-MpPreference",
            "all inventory exclusions present\r\n",
            0,
        ),
        entry("remove exclusions", r"Remove-MpPreference", "", 0),
    ]);
    table
}

/// KES's removal succeeds but asks for a reboot (3010,
/// ERROR_SUCCESS_REBOOT_REQUIRED) on every host of `table`.
pub fn kes_removal_needs_reboot(table: &mut [Value]) {
    set(
        table,
        "msiexec KES",
        json!({ "exit_code": 3010,
            "stdout": "MsiConfigureProductEx {8C3A2B1E-7F4D-4E2A-9B1C-5D6E7F8A9B0C} absent -> 3010\r\n" }),
    );
}

/// Asserts that none of the steps that change a host ran on it.
pub fn nothing_changed(answered: &[String]) {
    for change in [
        "msiexec KES",
        "msiexec Network Agent",
        "turn Defender on",
        "add exclusions",
    ] {
        assert!(
            !answered.contains(&change.to_string()),
            "{change} ran: {answered:?}"
        );
    }
}

/// Where `name` is in a host's answered list.
pub fn position(answered: &[String], name: &str) -> usize {
    answered
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} in {answered:?}"))
}

/// The CrowdStrike playbook's own steps, answered as on a host where the
/// Falcon sensor installs, registers and connects.
pub fn crowdstrike_table() -> Vec<Value> {
    let mut table = kaspersky_host();
    table.extend([
        entry("installer staged", r"MISSING: sensor installer", "installer staged: C:\\ProgramData\\MSP\\packages\\falcon\\WindowsSensor.exe (CrowdStrike Falcon Sensor 7.18.18905.0)\r\n", 0),
        // No sensor yet: no CSFalconService, no AG value under either key
        // falcon-scripts' Get-AID reads.
        entry("sensor before", r"running = \[bool\]", r#"{"service":"missing","running":false,"aid":""}"#, 0),
        entry("export exclusions", r"sensor-exclusions\.csv", "2 exclusion(s) for the Falcon console, saved to C:\\ProgramData\\MSP\\orchestrate\\sensor-exclusions.csv:\r\n", 0),
        // WindowsSensor.exe exits 0 once installed and provisioned; 1244 when
        // it cannot reach the CrowdStrike cloud (falcon-scripts,
        // powershell/install/falcon_windows_install.ps1).
        entry("install sensor", r"sensor installer exit code", "sensor installer exit code: 0\r\n", 0),
        entry("stop: cloud unreachable", r"The sensor installer exited with 1244", "The sensor installer exited with 1244: the sensor could not reach the CrowdStrike cloud.\r\n", 1),
        // Provisioned: AG holds the 16-byte agent id (read as hex, as
        // Get-AID does); the service's process keeps its TLS connection to
        // the cloud on 443 open (CrowdStrike's sensor guide, "Verify the
        // host's connection to the CrowdStrike cloud": netstat shows it
        // ESTABLISHED).
        entry("sensor up", r"\$connected = \[bool\]",
            r#"{"service":"Running","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":true}"#, 0),
        // common/windows-sensor-state.yml, in verify and again in
        // on_failure: the same facts, plus the kernel driver's state
        // (Win32_SystemDriver State "Running"; CrowdStrike's deployment
        // guide checks CSAgent with `sc query csagent`).
        entry("sensor health", r"product = \$\(if",
            r#"{"service":"Running","start":"Automatic","driver":"Running","product":"CrowdStrike Windows Sensor","version":"7.18.18905.0","aid":"3f7c2a91d0e84b6a9c1e5f2d7b8a0c4e","connected":true}"#, 0),
    ]);
    table
}

/// The state `HKLM:\SOFTWARE\Microsoft\Windows Advanced Threat
/// Protection\Status` and the Sense service show, as the MDE playbook reads
/// them: onboarded to the tenant `org`, or not onboarded (Sense stopped).
pub fn mde_state(onboarded: bool, org: &str) -> Value {
    json!({ "OnboardingState": if onboarded { 1 } else { 0 },
            "OrgId": if onboarded { org } else { "" },
            "Sense": if onboarded { "Running" } else { "Stopped" } })
}

pub const MDE_ORG: &str = "6f1c2f0e-2b7a-4c43-9a52-0d8e3b1f7a11";

/// The Defender for Endpoint playbook's own steps in front of the Defender
/// ones (the first matching entry answers), as on hosts where onboarding
/// works: not onboarded before, onboarded to [`MDE_ORG`] after.
pub fn mde_table() -> Vec<Value> {
    let mut table = defender_table();
    let mut active = mde_state(true, MDE_ORG);
    // Onboarded beside a third-party antivirus, Defender Antivirus runs in
    // passive mode (Microsoft, "Defender Antivirus compatibility with other
    // security products"; Get-MpComputerStatus AMRunningMode "Passive Mode").
    active["AMRunningMode"] = json!("Passive Mode");
    table.splice(
        0..0,
        [
            entry("stop: home", r"is a Home edition", "Microsoft Windows 11 Home (SKU 101) is a Home edition: Defender for Endpoint does not support it.\r\n", 1),
            entry("package staged", r"\(mde_onboarding_script\)", "onboarding package staged: C:\\ProgramData\\MSP\\packages\\mde\\WindowsDefenderATPOnboardingScript.cmd\r\n", 0),
            // Get-HotFix lists installed updates by KB id (Microsoft,
            // Get-HotFix); Install.ps1 checks the same three on 2012 R2.
            entry("downlevel prerequisites", r"KB2999226", "Server 2012 R2: KB2999226 installed, KB3080149 installed, KB3045999 installed; SCEP absent\r\n", 0),
            entry("passive mode set", r"-Name ForceDefenderPassiveMode -PropertyType DWord -Value 1", "ForceDefenderPassiveMode = 1: Defender stays passive beside Kaspersky until it is removed.\r\n", 0),
            entry("passive mode kept", r"Defender stays passive beside it", "ForceDefenderPassiveMode removed: Defender may become active.\r\n", 0),
            entry("passive mode lifted", r"Defender becomes the active antivirus", "ForceDefenderPassiveMode removed: Defender becomes the active antivirus.\r\n", 0),
            entry("Defender feature off again", r"Kaspersky is not back; leaving Defender enabled", "Kaspersky is not back; leaving Defender enabled.\r\n", 0),
            // DISM /Add-Capability exits 0 once added, 3010 when it needs a
            // reboot (DISM capabilities package servicing options).
            entry("Sense capability", r"Microsoft\.Windows\.Sense\.Client~~~~", "DISM /Add-Capability Microsoft.Windows.Sense.Client exit code: 0\r\n", 0),
            entry("Install.ps1", r"Install\.ps1 exit code: \{0\}", "Install.ps1 exit code: 0\r\n", 0),
            entry("Install.ps1 again", r"Install\.ps1 exit code \(second run\)", "Install.ps1 exit code (second run): 0\r\n", 0),
            entry("onboarding script", r"onboarding script exit code", "onboarding script exit code: 0\r\n", 0),
            entry("offboarding script", r"offboarding script exit code", "Kaspersky is not being put back: the host stays onboarded.\r\n", 0),
            entry("sensor active", r"\$mp = Get-MpComputerStatus", &active.to_string(), 0),
            // The same script reads the state in precheck, then in verify.
            json!({ "name": "state before", "match": r"Windows Advanced Threat Protection\\Status' -ErrorAction SilentlyContinue\s+\$sense",
                    "stdout": mde_state(false, MDE_ORG).to_string(), "times": 1 }),
            entry("state after", r"Windows Advanced Threat Protection\\Status' -ErrorAction SilentlyContinue\s+\$sense", &mde_state(true, MDE_ORG).to_string(), 0),
        ],
    );
    table
}
