//! A private PostgreSQL server for the tests.
//!
//! The server is Debian's PostgreSQL (scripts/deps/postgres.sh), started
//! once per test process: a copy of one `initdb` folder, then `postgres`
//! on a free loopback port, as the unprivileged `orchestrate-pg` user when
//! the tests run as root (PostgreSQL refuses root). Password
//! authentication (md5) is on, and the password reaches `orchestrate`
//! the way the README recommends: a password file named by `PGPASSFILE`,
//! never in a command line. The server runs under a shell that stops it
//! when this process goes, however it goes: the shell waits on a pipe
//! whose other end only this process holds.
//!
//! Each test gets a database of its own ([`PgServer::database`]); the
//! journal tests' two backends are in `journals` beside `harness`.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The user the servers run as when the tests run as root.
pub const SERVER_USER: &str = "orchestrate-pg";
/// The database superuser the tests (and orchestrate) log in as.
pub const DB_USER: &str = "orchestrate";

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The password file (`PGPASSFILE`) that lets `orchestrate` in.
    pub passfile: PathBuf,
    pub password: String,
    /// Held for the life of this process: when it closes, the server stops.
    _lifeline: Mutex<std::process::ChildStdin>,
    /// The shell that stops it (never waited for: it outlives the tests).
    _shell: Mutex<std::process::Child>,
}

/// Where Debian keeps the server's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL is missing: run scripts/deps/postgres.sh (as root) first")
}

/// uid and gid of `user`, when the tests run as root.
fn run_as() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = Command::new("getent")
        .args(["passwd", SERVER_USER])
        .output()
        .expect("getent");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let fields: Vec<&str> = line.trim().split(':').collect();
    assert!(
        fields.len() >= 7,
        "user {SERVER_USER} is missing: run scripts/deps/postgres.sh (as root) first"
    );
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn as_server_user(command: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        command.uid(uid).gid(gid);
    }
}

/// The server of this test process, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

impl PgServer {
    fn start() -> PgServer {
        let bin = bin_dir();
        let ids = run_as();
        let template = template(&bin, ids);
        let dir = std::env::temp_dir().join(format!("orchestrate-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        let mut copy = Command::new("cp");
        copy.arg("-a").arg(&template).arg(&data);
        as_server_user(&mut copy, ids);
        assert!(
            copy.status().unwrap().success(),
            "cp -a {}",
            template.display()
        );
        let password = format!("pw-{:x}", rand_u64());
        let port = free_port();
        // fsync off: the tests kill orchestrate, never the server.
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(r#""$0" -D "$1" -p "$2" -k "$3" -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 >"$3/server.log" 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf "$3""#)
            .arg(bin.join("postgres"))
            .arg(&data)
            .arg(port.to_string())
            .arg(&dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        as_server_user(&mut shell, ids);
        let mut child = shell.spawn().expect("start postgres");
        let lifeline = child.stdin.take().unwrap();
        let passfile = dir.join("pgpass");
        std::fs::write(
            &passfile,
            format!("127.0.0.1:{port}:*:{DB_USER}:{password}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let server = PgServer {
            port,
            dir,
            bin,
            passfile,
            password,
            _lifeline: Mutex::new(lifeline),
            _shell: Mutex::new(child),
        };
        // The password, set over the socket (trusted) once the server is up;
        // md5 rather than SCRAM, whose 4096 rounds of SHA-256 take half a
        // second per connection in a debug build.
        let set_password = format!(
            "SET password_encryption = 'md5'; ALTER ROLE {DB_USER} PASSWORD '{}'",
            server.password
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.local_psql(&set_password).status.success() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `psql` over the server's socket, which trusts its local users.
    fn local_psql(&self, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                DB_USER,
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .expect("psql runs")
    }

    /// `psql` as the superuser on `db`, with the password file.
    pub fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                DB_USER,
                "-d",
                db,
            ])
            .args(["-c", sql])
            .env("PGPASSFILE", &self.passfile)
            .output()
            .expect("psql runs")
    }

    /// A fresh database; its connection string (no password in it).
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "CREATE DATABASE: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{DB_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Everything in database `db`, as `pg_dump` writes it.
    pub fn dump(&self, db: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                DB_USER,
                db,
            ])
            .env("PGPASSFILE", &self.passfile)
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A data folder made by `initdb` once per machine (and PostgreSQL
/// version), copied by each test process: `initdb` takes seconds. Local
/// connections are trusted, loopback ones need the password (md5).
fn template(bin: &std::path::Path, ids: Option<(u32, u32)>) -> PathBuf {
    let version = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let euid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("orchestrate-pg-template-{version}-{euid}"));
    if dir.join("PG_VERSION").exists() {
        return dir;
    }
    let building = std::env::temp_dir().join(format!(
        "orchestrate-pg-template-{version}-{euid}.{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&building)
        .args(["-U", DB_USER, "-E", "UTF8", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=md5"])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null());
    as_server_user(&mut initdb, ids);
    let out = initdb.output().expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test process may have made one meanwhile: either will do.
    if std::fs::rename(&building, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}
