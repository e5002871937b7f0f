//! Real `.deb` packages of the Kaspersky products, built by the test with
//! `dpkg-deb --build` and installed with the real `dpkg` into a host's root
//! (`tests/standins/bin/dpkg`), so that removing them is dpkg's own doing:
//! dependencies (`kesl-gui` before `kesl`), maintainer scripts, files gone
//! and data folders left behind.
//!
//! The packages hold no product, only what the playbooks touch, and
//! maintainer scripts that behave as Kaspersky documents it:
//! - `klnagent64`'s postinst configures the agent from the silent-mode
//!   answers (`KLNAGENT_SERVER`, `KLNAGENT_AUTOINSTALL=1`, `EULA_ACCEPTED=1`,
//!   from the environment or the file named by `KLAUTOANSWERS`): "Variables
//!   of the answer file used as parameters of Network Agent for Linux
//!   installation in silent mode", support.kaspersky.com/ksc/15.1/en-US/199693.htm.
//!   EULA not accepted: "installation is not performed" (exit 1). Without
//!   silent mode the package is installed but the agent is not configured
//!   nor started (unmanaged) until its postinstall script is run by hand.
//! - `kesl` is configured and started by `kesl-setup.pl --autoinstall=FILE`
//!   (KESL's initial configuration in silent mode); `kesl-gui` depends on
//!   `kesl`. Its data folder `/var/opt/kaspersky/kesl` is made at run time,
//!   so `dpkg -r` leaves it behind (DOMAIN.md: leftovers in
//!   /var/opt/kaspersky).
//! - Unverified (no vendor page found): that the packages' prerm scripts
//!   stop the services (`systemctl stop kesl`, `klnagent64`); the playbook
//!   pages say so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One package to build.
pub struct Deb<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub depends: Option<&'a str>,
    pub description: &'a str,
    /// (path inside the package, contents); executables end in `-control`,
    /// `.pl`, or live in a `bin/` folder.
    pub files: &'a [(&'a str, &'a str)],
    /// (maintainer script name, body after `#!/bin/sh`).
    pub scripts: &'a [(&'a str, &'a str)],
}

impl Deb<'_> {
    /// Builds `NAME_VERSION_all.deb` into `dir` and returns its path.
    pub fn build(&self, dir: &Path) -> PathBuf {
        let tree = tempfile::tempdir().unwrap();
        let control = tree.path().join("DEBIAN");
        std::fs::create_dir_all(&control).unwrap();
        let mut text = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: orchestrate tests <tests@example.invalid>\n",
            self.name, self.version
        );
        if let Some(depends) = self.depends {
            text.push_str(&format!("Depends: {depends}\n"));
        }
        text.push_str(&format!("Description: {} (test build)\n", self.description));
        std::fs::write(control.join("control"), text).unwrap();
        for (name, body) in self.scripts {
            write_executable(&control.join(name), &format!("#!/bin/sh\nset -e\n{body}\n"));
        }
        for (path, body) in self.files {
            let target = tree.path().join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            if path.contains("/bin/") {
                write_executable(&target, body);
            } else {
                std::fs::write(&target, body).unwrap();
            }
        }
        let out = dir.join(format!("{}_{}_all.deb", self.name, self.version));
        let status = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(tree.path())
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("dpkg-deb (scripts/deps/clamav.sh installs dpkg-dev tools)");
        assert!(status.success(), "dpkg-deb --build {}", self.name);
        out
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const KESL_SETUP: &str = r#"#!/bin/sh
# kesl-setup.pl --autoinstall=FILE: KESL's initial configuration from an
# answers file; the application runs afterwards.
case ${1:-} in --autoinstall=*) ;; *) echo "usage: kesl-setup.pl --autoinstall=FILE" >&2; exit 1 ;; esac
[ -f "${1#--autoinstall=}" ] || { echo "cannot read ${1#--autoinstall=}" >&2; exit 1; }
mkdir -p "$ORCH_STATE/root/var/opt/kaspersky/kesl"
systemctl start kesl
echo "Kaspersky Endpoint Security for Linux is configured and running"
"#;

const KLNAGENT_POSTINST: &str = r#"
[ "$1" = configure ] || exit 0
if [ -n "${KLAUTOANSWERS:-}" ] && [ -f "$KLAUTOANSWERS" ]; then . "$KLAUTOANSWERS"; fi
if [ "${KLNAGENT_AUTOINSTALL:-}" != 1 ]; then
    echo "Network Agent installed but not configured: run /opt/kaspersky/klnagent64/lib/bin/setup/postinstall.pl"
    exit 0
fi
if [ "${EULA_ACCEPTED:-}" != 1 ]; then
    echo "EULA not accepted (EULA_ACCEPTED=1): installation is not performed" >&2
    exit 1
fi
[ -n "${KLNAGENT_SERVER:-}" ] || { echo "KLNAGENT_SERVER is required in silent mode" >&2; exit 1; }
mkdir -p "$DPKG_ROOT/var/opt/kaspersky/klnagent64"
echo "$KLNAGENT_SERVER" > "$DPKG_ROOT/var/opt/kaspersky/klnagent64/server"
systemctl start klnagent64
echo "Network Agent connects to Administration Server $KLNAGENT_SERVER"
"#;

/// KESL, its GUI and Network Agent, as a KSC-managed Debian endpoint has
/// them; returns the paths of the built packages (kesl, kesl-gui, klnagent64).
pub fn kaspersky_packages(dir: &Path) -> Vec<PathBuf> {
    let kesl = Deb {
        name: "kesl",
        version: "12.1.0-1234",
        depends: None,
        description: "Kaspersky Endpoint Security for Linux",
        files: &[
            (
                "lib/systemd/system/kesl.service",
                "[Service]\nExecStart=/opt/kaspersky/kesl/libexec/kesl\n",
            ),
            ("lib/systemd/system/kesl-supervisor.service", "[Service]\n"),
            ("opt/kaspersky/kesl/bin/kesl-setup.pl", KESL_SETUP),
        ],
        scripts: &[("prerm", "systemctl stop kesl kesl-supervisor || true")],
    };
    let gui = Deb {
        name: "kesl-gui",
        version: "12.1.0-1234",
        depends: Some("kesl"),
        description: "Kaspersky Endpoint Security for Linux graphical interface",
        files: &[("opt/kaspersky/kesl/share/gui/README", "gui\n")],
        scripts: &[],
    };
    let agent = Deb {
        name: "klnagent64",
        version: "15.1.0-20748",
        depends: None,
        description: "Kaspersky Security Center Network Agent",
        files: &[
            ("lib/systemd/system/klnagent64.service", "[Service]\n"),
            (
                "opt/kaspersky/klnagent64/bin/klnagchk",
                "#!/bin/sh\necho klnagchk\n",
            ),
        ],
        scripts: &[
            ("postinst", KLNAGENT_POSTINST),
            ("prerm", "systemctl stop klnagent64 || true"),
        ],
    };
    vec![kesl.build(dir), gui.build(dir), agent.build(dir)]
}

/// A Kaspersky product the playbooks do not know how to remove.
pub fn other_kaspersky_package(dir: &Path) -> PathBuf {
    Deb {
        name: "kaspersky-scan-engine",
        version: "2.1.0-100",
        depends: None,
        description: "Kaspersky Scan Engine",
        files: &[("opt/kaspersky/ScanEngine/bin/kavehost", "#!/bin/sh\n")],
        scripts: &[],
    }
    .build(dir)
}
