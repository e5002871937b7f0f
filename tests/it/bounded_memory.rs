//! Memory that does not grow with what an endpoint prints or with the size
//! of an upload: a flood of output keeps its head and tail (with a note
//! saying how much was left out), a capture of output not kept whole is an
//! error naming the step, and an upload larger than a chunk reaches several
//! SSH hosts at once intact.

use crate::harness::Scratch;
use crate::support::sshd::SshdEnv;
use crate::support::wait_measured;

use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `orchestrate ARGS` in `scratch`, stdout to `out.json`; returns its
/// exit code and its peak resident memory in MiB (from `wait4`).
fn run_measured(scratch: &Scratch, args: &[&str]) -> (i32, u64) {
    let out = std::fs::File::create(scratch.path().join("out.json")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(args)
        .current_dir(scratch.path())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, usage) = wait_measured(child);
    (status.code().unwrap_or(-1), usage.ru_maxrss as u64 / 1024)
}

/// `run` of the scratch folder's playbook and inventory, the report as
/// JSON on standard output.
const RUN_JSON: &[&str] = &[
    "run",
    "playbook.yml",
    "-i",
    "inventory.yml",
    "--format",
    "json",
];

fn report_of(scratch: &Scratch) -> Value {
    let text = std::fs::read_to_string(scratch.path().join("out.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn steps_of(scratch: &Scratch) -> Vec<Value> {
    report_of(scratch)["clients"][0]["hosts"][0]["steps"]
        .as_array()
        .unwrap()
        .clone()
}

fn local_host(scratch: &Scratch) {
    scratch.write(
        "inventory.yml",
        "clients:\n  acme:\n    hosts:\n      - { name: flood01, address: 127.0.0.1, os: linux, transport: local }\n",
    );
}

#[test]
fn a_step_flooding_stdout_keeps_its_head_and_tail_in_bounded_memory() {
    let scratch = Scratch::new();
    local_host(&scratch);
    scratch.write(
        "playbook.yml",
        r#"name: flood
phases:
  - name: precheck
    steps:
      - name: print 30 MB
        check_safe: true
        sh: echo the first line; yes | head -c 30000000; echo; echo the last line
      - name: print without end
        check_safe: true
        sh: yes
        timeout: 2s
"#,
    );
    let (code, peak_mib) = run_measured(&scratch, RUN_JSON);
    assert_eq!(code, 1, "the endless step timed out");
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB");
    let steps = steps_of(&scratch);
    let stdout = steps[0]["stdout"].as_str().unwrap();
    assert!(
        stdout.starts_with("the first line\ny\ny\n"),
        "{}",
        &stdout[..40]
    );
    assert!(
        stdout.ends_with("y\ny\n\nthe last line\n"),
        "{}",
        &stdout[stdout.len() - 40..]
    );
    assert!(stdout.len() < 70 * 1024, "{} bytes kept", stdout.len());
    let note = regex_free_note(stdout);
    assert!(
        note > 29_000_000,
        "the note counts what is left out: {note}"
    );
    assert_eq!(steps[1]["status"], "timed_out");
    assert!(
        steps[1]["stdout"]
            .as_str()
            .unwrap()
            .contains("bytes of output not kept")
    );

    // The journal keeps the same.
    let run_id = report_of(&scratch)["run_id"].as_str().unwrap().to_string();
    let journal = scratch
        .orchestrate(&[
            "report",
            &run_id,
            "--format",
            "json",
            "--state",
            ".orchestrate/state.db",
        ])
        .expect_code(0)
        .json();
    let journaled = &journal["clients"][0]["hosts"][0]["steps"][0]["stdout"];
    assert_eq!(journaled.as_str(), Some(stdout));
}

/// The number in `[... N bytes of output not kept ...]`.
fn regex_free_note(text: &str) -> u64 {
    let start = text.find("[... ").expect("a truncation note") + 5;
    let rest = &text[start..];
    let end = rest
        .find(" bytes of output not kept ...]")
        .expect("the note's end");
    rest[..end].parse().unwrap()
}

#[test]
fn a_capture_of_more_output_than_is_kept_fails_naming_the_step() {
    let scratch = Scratch::new();
    local_host(&scratch);
    scratch.write(
        "playbook.yml",
        r#"name: big capture
phases:
  - name: precheck
    steps:
      - name: export settings
        check_safe: true
        sh: |
          printf '{"a": "'; head -c 3000000 /dev/zero | tr '\0' x; printf '"}'
        capture: { as: settings, parse: json }
  - name: uninstall
    steps:
      - name: never
        sh: echo "{{ settings.a }}"
"#,
    );
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    run.expect_code(1);
    let said = &run.stdout;
    assert!(
        said.contains("flood01")
            && said.contains("step `export settings` (precheck)")
            && said.contains("output could not be captured as `settings`")
            && said
                .contains("the output is 3000009 bytes, more than the 1024 KiB a capture can read"),
        "{}",
        &said[..said.len().min(2000)]
    );
}

#[test]
fn an_upload_larger_than_a_chunk_reaches_several_ssh_hosts_intact() {
    use sha2::Digest;
    let env = SshdEnv::new();
    let (_servers, hosts) = env.fleet(4);
    env.trust(&hosts);
    let scratch = Scratch::new();
    // Three chunks and a bit, not a multiple of any packet size.
    let body: Vec<u8> = (0..orchestrate::transport::upload::CHUNK * 3 + 4321)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(scratch.path().join("installer.bin"), &body).unwrap();
    let unique = format!("orchestrate-upload-test-{}", std::process::id());
    scratch.write("inventory.yml", &env.inventory(&hosts, |i| format!("u{i}")));
    scratch.write(
        "playbook.yml",
        &format!(
            r#"name: upload
concurrency: 4
phases:
  - name: install
    steps:
      - name: send the installer
        upload: {{ src: installer.bin, dest: "/tmp/{unique}-{{{{ host.name }}}}.bin", mode: "0600" }}
"#
        ),
    );
    let run = scratch.orchestrate(&["run", "playbook.yml", "-i", "inventory.yml"]);
    let want = hex::encode(sha2::Sha256::digest(&body));
    for i in 0..hosts.len() {
        let path = format!("/tmp/{unique}-u{i}.bin");
        let got = std::fs::read(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&got)),
            want,
            "u{i}: {} bytes arrived\n{}",
            got.len(),
            run.stdout
        );
    }
    run.expect_code(0);
}

/// The run hashes every file it was planned from (for `resume`), uploads
/// included: a large installer must be hashed as it is read, not read
/// whole first.
#[test]
fn a_large_upload_costs_no_copy_of_the_file_in_memory() {
    const MB: usize = 96;
    let scratch = Scratch::new();
    local_host(&scratch);
    {
        use std::io::Write;
        let file = std::fs::File::create(scratch.path().join("installer.bin")).unwrap();
        let mut file = std::io::BufWriter::new(file);
        let block: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..MB {
            file.write_all(&block).unwrap();
        }
    }
    let dest = scratch.path().join("copy.bin");
    scratch.write(
        "playbook.yml",
        &format!(
            "name: upload\nphases:\n  - name: install\n    steps:\n      - name: send the installer\n        upload: {{ src: installer.bin, dest: '{}', mode: '0600' }}\n",
            dest.display()
        ),
    );
    let (code, peak_mib) = run_measured(&scratch, RUN_JSON);
    assert_eq!(
        code,
        0,
        "{}",
        std::fs::read_to_string(scratch.path().join("out.json")).unwrap_or_default()
    );
    assert_eq!(
        std::fs::metadata(&dest).unwrap().len(),
        (MB * 1_000_000) as u64
    );
    // A debug build runs in about 40 MiB; a copy of the file would add 92.
    assert!(
        peak_mib < 80,
        "peak RSS {peak_mib} MiB for a {MB} MB upload"
    );
}
