//! Secrets never show: not as themselves, not a line at a time, not in
//! another encoding, not as a filter made them, not in an error message.
//!
//! Each test runs the real `orchestrate` with a secret that the endpoint
//! echoes back (stdout, stderr, a failing step's error), then searches
//! every artefact of the run, as raw bytes, for the secret and each of its
//! forms: see [`Artefacts`], which other tests may reuse.

use std::process::Output;

use crate::harness::{Scratch, orchestrate_in as orchestrate};
use crate::support::sshd::{ClientKey, SshdEnv};

/// Where [`run`] asks `orchestrate` to write its files, in the scratch folder.
pub const LOG: &str = "run.log";
pub const REPORT: &str = "report.json";
pub const STATE: &str = "state.db";

/// Everything a run left that a person or a program could read, as raw
/// bytes: the run's own stdout and stderr, its `--log`, its `--report-json`,
/// the journal and its write-ahead log, and what `status`, `status RUN_ID`
/// and `report RUN_ID --format html|json|junit` print.
pub struct Artefacts {
    items: Vec<(String, Vec<u8>)>,
}

impl Artefacts {
    /// The artefacts of run `run_id` (`None`: a run refused before it got
    /// an id) in `scratch`, with the journal at [`STATE`]; files that were
    /// never written are left out.
    pub fn collect(scratch: &Scratch, run_id: Option<&str>) -> Artefacts {
        let mut items = Vec::new();
        for name in [
            LOG.to_string(),
            REPORT.to_string(),
            STATE.to_string(),
            format!("{STATE}-wal"),
        ] {
            if let Ok(bytes) = std::fs::read(scratch.path().join(&name)) {
                items.push((name, bytes));
            }
        }
        if scratch.path().join(STATE).exists() {
            let status = orchestrate(scratch.path(), &["status", "--state", STATE], &[]);
            items.extend(outputs("status", &status));
            if let Some(id) = run_id {
                let status = orchestrate(scratch.path(), &["status", id, "--state", STATE], &[]);
                items.extend(outputs(&format!("status {id}"), &status));
                for format in ["html", "json", "junit"] {
                    let report = orchestrate(
                        scratch.path(),
                        &["report", id, "--format", format, "--state", STATE],
                        &[],
                    );
                    assert_eq!(report.status.code(), Some(0), "report --format {format}");
                    items.extend(outputs(&format!("report --format {format}"), &report));
                }
            }
        }
        Artefacts { items }
    }

    /// Adds what a command printed (the run itself, a dry run...).
    pub fn with_output(mut self, what: &str, output: &Output) -> Artefacts {
        self.items.extend(outputs(what, output));
        self
    }

    /// The artefact named `what` (`"run.log"`, `"report --format html"`, `"run stderr"`...).
    pub fn get(&self, what: &str) -> String {
        let (_, bytes) = self
            .items
            .iter()
            .find(|(name, _)| name == what)
            .unwrap_or_else(|| panic!("no artefact `{what}`; have {:?}", self.names()));
        String::from_utf8_lossy(bytes).into_owned()
    }

    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Fails, naming the artefact and the place, if any holds `needle`.
    #[track_caller]
    pub fn assert_absent(&self, needle: &[u8]) {
        assert!(!needle.is_empty());
        for (name, bytes) in &self.items {
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                let from = at.saturating_sub(60);
                let to = (at + needle.len() + 60).min(bytes.len());
                panic!(
                    "{name} holds {:?} at byte {at}: ...{}...",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&bytes[from..to]).escape_debug()
                );
            }
        }
    }

    /// [`Artefacts::assert_absent`] for `value` and each form of it that an
    /// endpoint or a template may produce: see [`forms`].
    #[track_caller]
    pub fn assert_secret_absent(&self, value: &str) {
        for form in forms(value) {
            self.assert_absent(&form);
        }
    }
}

fn outputs(what: &str, output: &Output) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{what} stdout"), output.stdout.clone()),
        (format!("{what} stderr"), output.stderr.clone()),
    ]
}

/// `value` and what it becomes on the way: each line of a multi-line value
/// (at least 4 characters, trimmed), LF and CRLF line ends, the quoting and
/// escaping of the tool's own filters; each in UTF-8, UTF-16LE, UTF-16BE,
/// Latin-1 and Windows-1252 (where the value can be written in them), and
/// each of those as JSON holds it once decoded.
/// Written here on its own, not taken from the code under test.
pub fn forms(value: &str) -> Vec<Vec<u8>> {
    let mut texts = vec![value.to_string()];
    if value.contains('\n') {
        let lf = value.replace("\r\n", "\n");
        texts.push(lf.replace('\n', "\r\n"));
        texts.extend(
            lf.lines()
                .map(str::trim)
                .filter(|l| l.chars().count() >= 4)
                .map(String::from),
        );
        texts.push(lf);
    }
    let mut filtered = Vec::new();
    for text in &texts {
        filtered.push(text.replace('\'', "'\\''"));
        filtered.push(text.replace('\'', "''"));
        let json = serde_json::to_string(text).unwrap();
        filtered.push(json[1..json.len() - 1].to_string());
        let mut escaped = String::new();
        for c in text.chars() {
            if ".[]()*+?{}|^$\\".contains(c) {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        filtered.push(escaped);
    }
    texts.extend(filtered);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for text in texts {
        let utf16: Vec<u16> = text.encode_utf16().collect();
        let mut encoded = vec![
            text.as_bytes().to_vec(),
            utf16.iter().flat_map(|u| u.to_le_bytes()).collect(),
            utf16.iter().flat_map(|u| u.to_be_bytes()).collect(),
        ];
        if text.chars().all(|c| (c as u32) <= 0xFF) {
            encoded.push(text.chars().map(|c| c as u8).collect());
        }
        // Windows-1252 differs from Latin-1 in 0x80..0x9F; the tests use only €.
        if text.chars().all(|c| (c as u32) <= 0xFF || c == '€') {
            encoded.push(
                text.chars()
                    .map(|c| if c == '€' { 0x80 } else { c as u8 })
                    .collect(),
            );
        }
        for e in encoded {
            // As the JSON artefacts (log, report, journal) hold output:
            // decoded lossily, then escaped (UTF-16's NULs as `\u0000`).
            let decoded = String::from_utf8_lossy(&e).into_owned();
            let json = serde_json::to_string(&decoded).unwrap();
            for form in [
                json.as_bytes()[1..json.len() - 1].to_vec(),
                decoded.into_bytes(),
                e,
            ] {
                if !out.contains(&form) {
                    out.push(form);
                }
            }
        }
    }
    out
}

/// `orchestrate run playbook.yml -i inventory.yml` writing the log, the
/// report and the journal where [`Artefacts::collect`] looks; returns the
/// output and everything the run left.
pub fn run(scratch: &Scratch, extra: &[&str], env: &[(&str, &str)]) -> (Output, Artefacts) {
    let mut args = vec![
        "run",
        "playbook.yml",
        "-i",
        "inventory.yml",
        "--log",
        LOG,
        "--report-json",
        REPORT,
        "--state",
        STATE,
    ];
    args.extend_from_slice(extra);
    let output = orchestrate(scratch.path(), &args, env);
    let run_id = std::fs::read(scratch.path().join(REPORT))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|report| report["run_id"].as_str().map(String::from));
    let artefacts = Artefacts::collect(scratch, run_id.as_deref()).with_output("run", &output);
    (output, artefacts)
}

/// One local host, with the secrets folder `secrets/`.
fn local_inventory(scratch: &Scratch) {
    std::fs::create_dir_all(scratch.path().join("secrets")).unwrap();
    scratch.write(
        "inventory.yml",
        "secrets_dir: secrets\nclients:\n  acme:\n    hosts:\n      - { name: h01, address: 127.0.0.1, os: linux, transport: local }\n",
    );
}

/// How a playbook's mistakes are found: a run, a dry run, `validate`.
const PLANNING: [&[&str]; 3] = [
    &["run", "playbook.yml", "-i", "inventory.yml"],
    &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"],
    &["validate", "playbook.yml", "-i", "inventory.yml"],
];

/// Runs `args`, which must be refused (exit 2) and leave no trace of
/// `secret` in any form; returns what it said.
#[track_caller]
fn refused(scratch: &Scratch, args: &[&str], env: &[(&str, &str)], secret: &str) -> String {
    let output = orchestrate(scratch.path(), args, env);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {said}");
    Artefacts::collect(scratch, None)
        .with_output("refused", &output)
        .assert_secret_absent(secret);
    said
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A private key as a secrets file holds it; its last base64 line is too
/// short to mask alone.
const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAMwAAAAtzc2gtZWQyNTUxOQAAACDk5aWxsZWdpYmxl\nQ==\n-----END OPENSSH PRIVATE KEY-----";

/// Echoes a multi-line secret back every way a step can: whole, with CRLF,
/// a line on stderr as the last line (so the step's error quotes it), and
/// fails, so the error reaches the host's record, the rollback and the report.
const MULTI_LINE: &str = r#"name: multi-line secret
phases:
  - name: install
    steps:
      - name: enrol
        sh: |
          key={{ secret(name="ENROL_KEY") | sh_quote }}
          printf '%s\n' "$key"
          printf '%s\n' "$key" | sed 's/$/\r/'
          printf '%s\n' "$key" | sed -n 2p >&2
          exit 1
        rollback:
          - name: unenrol
            sh: printf '%s\n' {{ secret(name="ENROL_KEY") | sh_quote }} | tail -n 2 >&2
"#;

fn assert_masked_in_report(artefacts: &Artefacts) {
    let report: serde_json::Value = serde_json::from_str(&artefacts.get(REPORT)).unwrap();
    let host = &report["clients"][0]["hosts"][0];
    assert_eq!(host["status"], "failed", "{host}");
    assert!(
        host["error"]
            .as_str()
            .unwrap()
            .ends_with("exited with 1 (ok: [0]): ***"),
        "{host}"
    );
}

#[test]
fn each_line_of_a_multi_line_secret_is_masked_in_every_artefact() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    scratch.write("secrets/ENROL_KEY", &format!("{KEY}\n"));
    scratch.write("playbook.yml", MULTI_LINE);
    for format in ["human", "json"] {
        let (output, artefacts) = run(&scratch, &["--format", format], &[]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        artefacts.assert_secret_absent(KEY);
        assert_masked_in_report(&artefacts);
        assert!(artefacts.get("run.log").contains("***"));
    }
}

#[test]
fn a_multi_line_secret_echoed_over_ssh_is_masked_in_every_artefact() {
    let env = SshdEnv::new();
    let server = env.server(1);
    let hosts = server.hosts();
    env.trust(&hosts);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path().join("secrets")).unwrap();
    scratch.write(
        "inventory.yml",
        &format!(
            "secrets_dir: secrets\ndefaults:\n  transport: ssh\n  user: {}\n  connect_timeout: 5s\n  ssh: {{ identity_file: '{}', known_hosts: '{}' }}\nclients:\n  acme:\n    hosts:\n      - {{ name: h01, address: {}, port: {}, os: linux }}\n",
            env.user(),
            env.key(ClientKey::Ed25519).display(),
            env.known_hosts.display(),
            hosts[0].address,
            hosts[0].port
        ),
    );
    scratch.write("secrets/ENROL_KEY", &format!("{KEY}\n"));
    // Also in UTF-16, and split across two writes (two SSH data messages).
    let more = r#"          - name: unenrol in UTF-16
            sh: printf '%s' {{ secret(name="TOKEN") | sh_quote }} | iconv -f UTF-8 -t UTF-16LE >&2
          - name: unenrol in two writes
            sh: |
              t={{ secret(name="TOKEN") | sh_quote }}
              printf '%s' "${t%-over-ssh}"; sleep 0.2; printf '%s\n' -over-ssh
"#;
    scratch.write("playbook.yml", &format!("{MULTI_LINE}{more}"));
    let (output, artefacts) = run(&scratch, &[], &[("TOKEN", "Kennwort-ä€-over-ssh")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    artefacts.assert_secret_absent(KEY);
    artefacts.assert_secret_absent("Kennwort-ä€-over-ssh");
    assert_masked_in_report(&artefacts);
    let report: serde_json::Value = serde_json::from_str(&artefacts.get(REPORT)).unwrap();
    let rollback = &report["clients"][0]["hosts"][0]["rollback"];
    assert_eq!(rollback[2]["stdout"], "***\n", "{rollback}");
}

#[test]
fn a_secret_in_utf16_or_latin1_output_is_masked_in_every_artefact() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    // Windows endpoints write UTF-16LE; older tools Latin-1 or Windows-1252.
    let euro = "Kennwort-ä€-9x";
    let latin = "Straße-äöü-9x";
    scratch.write(
        "playbook.yml",
        r#"name: encodings
phases:
  - name: install
    steps:
      - name: echo in other encodings
        sh: |
          e={{ secret(name="EURO_PW") | sh_quote }}
          l={{ secret(name="LATIN_PW") | sh_quote }}
          printf 'le:%s\n' "$e" | iconv -f UTF-8 -t UTF-16LE
          printf 'be:%s\n' "$e" | iconv -f UTF-8 -t UTF-16BE
          printf 'cp:%s\n' "$e" | iconv -f UTF-8 -t CP1252
          printf 'l1:%s\n' "$l" | iconv -f UTF-8 -t LATIN1
          printf 'pw=%s\n' "$l" | iconv -f UTF-8 -t LATIN1 >&2
          exit 1
"#,
    );
    let (output, artefacts) = run(&scratch, &[], &[("EURO_PW", euro), ("LATIN_PW", latin)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    artefacts.assert_secret_absent(euro);
    artefacts.assert_secret_absent(latin);
    let report: serde_json::Value = serde_json::from_str(&artefacts.get(REPORT)).unwrap();
    let host = &report["clients"][0]["hosts"][0];
    assert!(
        host["error"].as_str().unwrap().ends_with(": pw=***"),
        "{host}"
    );
    // What is around the secret is kept.
    let stdout = host["steps"][0]["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("cp:***") && stdout.contains("l1:***"),
        "{stdout}"
    );
}

/// The value Tera would quote in its error ("The string `...` cannot be
/// converted"), by each path into a template error.
const NOT_A_NUMBER: &str = "not-a-number-pw";

#[test]
fn template_errors_never_print_the_secret() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    let env = [("PW", NOT_A_NUMBER)];
    // Written straight after the secret: refused when the playbook is read,
    // at the filter's line and column, by run, dry run and validate alike.
    scratch.write(
        "playbook.yml",
        "name: t\nphases:\n  - name: p\n    steps:\n      - sh: echo {{ secret(name=\"PW\") | int }}\n",
    );
    for args in PLANNING {
        let said = refused(&scratch, args, &env, NOT_A_NUMBER);
        assert!(said.contains("playbook.yml:5:41"), "{args:?}: {said}");
        assert!(said.contains("the filter `int`"), "{said}");
    }
    // Reached through a variable, and rendered only at run time (it reads a
    // captured value): the step fails, and its error holds no value.
    scratch.write(
        "playbook.yml",
        r#"name: t
phases:
  - name: p
    steps:
      - name: look
        sh: echo 3
        capture: { as: count }
      - name: convert
        sh: "{% set pw = secret(name='PW') %}echo {{ count }} {{ pw | int }}"
"#,
    );
    let (output, artefacts) = run(&scratch, &[], &env);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    artefacts.assert_secret_absent(NOT_A_NUMBER);
    assert!(
        artefacts
            .get(REPORT)
            .contains("cannot go through the filter `int`"),
        "{}",
        artefacts.get(REPORT)
    );
}

#[test]
fn a_tera_error_that_quotes_the_value_is_masked() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    // No filter here: the error itself quotes the value.
    scratch.write(
        "playbook.yml",
        "name: t\nphases:\n  - name: p\n    steps:\n      - sh: echo {{ throw(message='bad value ' ~ secret(name=\"PW\")) }}\n",
    );
    for args in &PLANNING[1..] {
        let said = refused(&scratch, args, &[("PW", NOT_A_NUMBER)], NOT_A_NUMBER);
        assert!(said.contains("bad value ***"), "{said}");
    }
    let (output, artefacts) = run(&scratch, &[], &[("PW", NOT_A_NUMBER)]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    artefacts.assert_secret_absent(NOT_A_NUMBER);
}

/// Quotes, `$`, a backslash, regex and JSON specials: every filter changes it.
const SPECIAL: &str = r#"pa$$"w.o'r(d)\x"#;

#[test]
fn every_form_the_tools_filters_make_of_a_secret_is_masked() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    scratch.write(
        "playbook.yml",
        r#"name: filters
phases:
  - name: install
    steps:
      - name: print every form
        sh: |
          printf '%s\n' {{ secret(name="SPECIAL_PW") | sh_quote }}
          printf '%s\n' {{ secret(name="SPECIAL_PW") | json | sh_quote }}
          printf '%s\n' {{ secret(name="SPECIAL_PW") | regex_escape | sh_quote }}
          printf '%s\n' {{ secret(name="SPECIAL_PW") | ps_quote | sh_quote }}
          printf '%s\n' {{ {"token": secret(name="SPECIAL_PW")} | json | sh_quote }}
          printf '%s\n' {{ secret(name="SPECIAL_PW") | regex_escape | json | sh_quote }} >&2
          exit 1
"#,
    );
    let env = [("SPECIAL_PW", SPECIAL)];
    let dry = orchestrate(
        scratch.path(),
        &["run", "playbook.yml", "-i", "inventory.yml", "--dry-run"],
        &env,
    );
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let json_dry = orchestrate(
        scratch.path(),
        &[PLANNING[1], &["--format", "json"]].concat(),
        &env,
    );
    let (output, artefacts) = run(&scratch, &[], &env);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let artefacts = artefacts
        .with_output("dry run", &dry)
        .with_output("dry run json", &json_dry);
    artefacts.assert_secret_absent(SPECIAL);
    // The chain regex_escape | json, and the JSON of a map holding it.
    let regex = r#"pa\$\$"w\.o'r\(d\)\\x"#;
    artefacts.assert_secret_absent(regex);
    assert!(
        artefacts
            .get("dry run stdout")
            .contains("printf '%s\\n' '***'")
    );
}

#[test]
fn a_secret_through_any_other_filter_is_refused_at_plan_time() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    for filter in [
        "upper",
        "lower",
        "replace(from='a', to='b')",
        "escape",
        "trim",
        "truncate(length=6)",
    ] {
        scratch.write(
            "playbook.yml",
            &format!("name: t\nphases:\n  - name: p\n    steps:\n      - sh: echo {{{{ secret(name=\"PW\") | {filter} }}}}\n"),
        );
        let name = filter.split('(').next().unwrap();
        for args in &PLANNING[1..] {
            // Whether the secret is set or not.
            for env in [&[("PW", "Secret-Value-Aa")][..], &[]] {
                let said = refused(&scratch, args, env, "Secret-Value-Aa");
                assert!(said.contains("playbook.yml:5:41"), "{said}");
                assert!(said.contains(&format!("the filter `{name}`")), "{said}");
                assert!(
                    said.contains("sh_quote, ps_quote, regex_escape or"),
                    "{said}"
                );
            }
        }
    }
    // Reached through a variable: refused all the same, at plan time.
    scratch.write(
        "playbook.yml",
        "name: t\nphases:\n  - name: p\n    steps:\n      - sh: \"{% set pw = secret(name='PW') %}echo {{ pw | upper }}\"\n",
    );
    let (output, artefacts) = run(&scratch, &[], &[("PW", "Secret-Value-Aa")]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("the filter `upper`"),
        "{}",
        text(&output)
    );
    artefacts.assert_secret_absent("SECRET-VALUE-AA");
    artefacts.assert_secret_absent("Secret-Value-Aa");
}

#[test]
fn a_script_syntax_error_quotes_its_line_with_the_secret_masked() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    // `validate` parses the rendered script and quotes the broken line.
    scratch.write(
        "playbook.yml",
        "name: t\nphases:\n  - name: p\n    steps:\n      - sh: \"if [ {{ secret(name='PW') | sh_quote }} = x ]; then (echo\"\n",
    );
    let said = refused(
        &scratch,
        PLANNING[2],
        &[("PW", "Secret-Value-Aa")],
        "Secret-Value-Aa",
    );
    assert!(said.contains("syntax error"), "{said}");
    assert!(said.contains("'***'"), "{said}");
}

#[test]
fn a_condition_may_put_a_secret_through_any_filter() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    // `when` shows only true or false: nothing of the value can leak.
    scratch.write(
        "playbook.yml",
        r#"name: t
phases:
  - name: p
    steps:
      - name: only with a long token
        when: secret(name="PW") | trim | length > 8
        sh: echo long
"#,
    );
    let (output, artefacts) = run(&scratch, &[], &[("PW", "Secret-Value-Aa")]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    artefacts.assert_secret_absent("Secret-Value-Aa");
    assert!(artefacts.get(REPORT).contains("long"));
}

#[test]
fn a_secret_shorter_than_four_characters_is_refused_where_it_is_used() {
    let scratch = Scratch::new();
    local_inventory(&scratch);
    scratch.write(
        "playbook.yml",
        "name: t\nphases:\n  - name: p\n    steps:\n      - name: greet\n        sh: echo hello {{ secret(name=\"TINY\") }}\n",
    );
    for args in PLANNING {
        let said = refused(&scratch, args, &[("TINY", "q7z")], "q7z");
        assert!(said.contains("playbook.yml:6"), "{said}");
        assert!(said.contains("step `greet`"), "{said}");
        assert!(
            said.contains("secret `TINY` is 3 characters long"),
            "{said}"
        );
    }
    // Four characters are enough.
    let (output, artefacts) = run(&scratch, &[], &[("TINY", "q7zx")]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    artefacts.assert_secret_absent("q7zx");
    assert!(artefacts.get(REPORT).contains("hello ***"));
}
