//! Uploads that meet on one disk: hosts that are one machine under several
//! names (or a share they all mount) uploading the same path at once, a
//! controller that comes back with the same process id (pid 1 in a
//! container) after a cut run left its temporary copy, and a host whose
//! disk refuses the copy half-way. Each over real `sshd` processes and
//! OpenSSH's own SFTP server; the destination must end whole (old copy or
//! new, never a part), with no temporary copy left beside it, and a host
//! that failed must say what to check.

use crate::faults::{
    Entry, RUN, UPLOAD_ONLY, entry, host, inventory, names_in, payload, playbook, report,
};
use crate::harness::Scratch;
use crate::support::sshd::SshdEnv;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Bigger than one upload chunk (256 KiB) many times over, so the hosts'
/// writes overlap.
const SIZE: usize = 3_000_000;

/// The hosts' folder `marks` holding a good old copy at `UPLOAD_ONLY`'s
/// destination, and a scratch folder whose playbook uploads a new copy
/// there on all of `entries` at once.
struct Scene {
    marks: PathBuf,
    scratch: Scratch,
    new_copy: String,
}

fn scene(env: &SshdEnv, entries: &[Entry]) -> Scene {
    let marks = env.folder("marks");
    std::fs::write(marks.join("installer.bin"), "the good old copy").unwrap();
    env.give_tree(&marks);
    let scratch = Scratch::new();
    scratch.write("inventory.yml", &inventory(env, entries, "30s"));
    let all_at_once = format!("concurrency: {}\n{UPLOAD_ONLY}", entries.len());
    scratch.write("playbook.yml", &playbook(&all_at_once, &marks));
    let new_copy = payload(SIZE);
    scratch.write("installer.bin", &new_copy);
    Scene {
        marks,
        scratch,
        new_copy,
    }
}

#[test]
fn hosts_that_are_one_machine_uploading_one_path_at_once_leave_one_whole_copy() {
    let env = SshdEnv::new();
    let (_servers, hosts) = env.fleet(6);
    env.trust(&hosts);
    let names = ["h01", "h02", "h03", "h04", "h05", "h06"];
    let entries: Vec<_> = names
        .iter()
        .zip(&hosts)
        .map(|(name, h)| entry(name, h))
        .collect();
    let Scene {
        marks,
        scratch,
        new_copy,
    } = &scene(&env, &entries);
    let run = scratch.orchestrate(&[RUN, &["--forks", "6"]].concat());
    let report = report(scratch);
    for name in names {
        let h = host(&report, name);
        assert_eq!(h["status"], "succeeded", "{h}\n{}", run.stdout);
    }
    run.expect_code(0);
    assert!(
        std::fs::read_to_string(marks.join("installer.bin")).unwrap() == *new_copy,
        "the destination is one whole new copy"
    );
    assert_eq!(
        names_in(marks),
        ["installer.bin"],
        "no copy is left beside it"
    );
}

/// The name an upload's temporary copy had when it was made of the
/// controller's process id and a counter: what a cut run of a controller
/// that was pid 1 (in a container) left beside the destination.
const LEFT_BY_A_CUT_RUN_AS_PID_1: &str = ".installer.bin.orchestrate-1-0.tmp";

#[test]
fn a_controller_that_is_pid_1_again_is_not_stopped_by_the_copy_a_cut_run_left() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        // A new PID namespace needs CAP_SYS_ADMIN; without it there is no
        // way to start the controller as pid 1 here.
        eprintln!("skipped: `unshare --pid` is not permitted on this machine");
        return;
    }
    let env = SshdEnv::new();
    let server = env.server(1);
    env.trust(&[server.host()]);
    let Scene {
        marks,
        scratch,
        new_copy,
    } = &scene(&env, &[entry("h01", &server.host())]);
    std::fs::write(marks.join(LEFT_BY_A_CUT_RUN_AS_PID_1), "cut half-way").unwrap();
    env.give_tree(marks);
    // The controller as the first process of a new PID namespace: pid 1,
    // as in a container, on every run.
    let out = Command::new("unshare")
        .args(["--pid", "--fork", env!("CARGO_BIN_EXE_orchestrate")])
        .args(RUN)
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(
        std::fs::read_to_string(marks.join("installer.bin")).unwrap(),
        *new_copy
    );
    assert_eq!(
        std::fs::read_to_string(marks.join(LEFT_BY_A_CUT_RUN_AS_PID_1)).unwrap(),
        "cut half-way",
        "what is not this run's own is left alone"
    );
}

/// An SFTP server whose files cannot grow past 1 MB: OpenSSH's
/// `sftp-server` under a file size limit, with `SIGXFSZ` ignored so that a
/// write past it fails with `EFBIG` (setrlimit(2)). sftp-server answers
/// that with a bare `SSH2_FX_FAILURE`, as it answers `ENOSPC` and `EDQUOT`
/// (`errno_to_portable` in OpenSSH's sftp-server.c maps neither): to the
/// client, this is a host whose disk filled up half-way through the copy.
fn sftp_server_that_fills_up(env: &SshdEnv) -> String {
    let wrapper = env.dir().join("sftp-server-1mb");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ntrap '' XFSZ\nexec prlimit --fsize=1000000 /usr/lib/openssh/sftp-server\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("Subsystem sftp {}", wrapper.display())
}

#[test]
fn a_host_whose_disk_fills_up_fails_clearly_while_another_replaces_the_same_file_whole() {
    let env = SshdEnv::new();
    let full = env.server_configured(1, &sftp_server_that_fills_up(&env));
    let roomy = env.server(1);
    env.trust(&[full.host(), roomy.host()]);
    let entries = [entry("h01", &full.host()), entry("h02", &roomy.host())];
    let Scene {
        marks,
        scratch,
        new_copy,
    } = &scene(&env, &entries);
    let run = scratch.orchestrate(RUN);
    run.expect_code(1);
    let report = report(scratch);
    let h01 = host(&report, "h01");
    assert_eq!(h01["status"], "failed", "{h01}");
    let error = h01.to_string();
    assert!(
        error.contains("check the host's free space") && error.contains("partial copy was removed"),
        "the error says what to check and what became of the copy: {error}"
    );
    let h02 = host(&report, "h02");
    assert_eq!(h02["status"], "succeeded", "{h02}");
    assert!(
        std::fs::read_to_string(marks.join("installer.bin")).unwrap() == *new_copy,
        "the destination is h02's whole copy"
    );
    assert_eq!(
        names_in(marks),
        ["installer.bin", "rolled-back"],
        "h01's partial copy is not left beside it (h01 was rolled back)"
    );
}
