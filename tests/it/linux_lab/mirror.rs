//! The lab's ClamAV signature mirror: a signature database holding only
//! EICAR, built with the real `sigtool --md5` (as ClamAV's docs make a
//! custom hash database), served over HTTP on 127.0.0.1 to the real
//! `freshclam` of every lab host (`DatabaseCustomURL`, see
//! `tests/standins/lib.sh`). freshclam sends plain `GET`s (with
//! `If-Modified-Since`, answered here always with the file).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::linux_lab::EICAR;

/// The name clamd reports EICAR by (the hash database's third field).
pub const SIGNATURE: &str = "Lab.Test.EICAR";

pub struct Mirror {
    pub url: String,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Mirror {
    /// Builds `lab.hdb` in `dir` and serves it.
    pub fn start(dir: &Path) -> Mirror {
        let sample = dir.join(SIGNATURE);
        std::fs::write(&sample, EICAR).unwrap();
        let out = Command::new("sigtool")
            .arg("--md5")
            .arg(&sample)
            .current_dir(dir)
            .output()
            .expect("sigtool (scripts/deps/clamav.sh installs clamav)");
        assert!(out.status.success(), "sigtool --md5");
        std::fs::remove_file(&sample).unwrap();
        let database = out.stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let found = request.split(' ').nth(1) == Some("/lab.hdb");
                let (status, body): (&str, &[u8]) = if found {
                    ("200 OK", &database)
                } else {
                    ("404 Not Found", b"")
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                if !request.starts_with("HEAD") {
                    let _ = stream.write_all(body);
                }
            }
        });
        Mirror {
            url: format!("http://127.0.0.1:{port}"),
            stop,
            port,
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
