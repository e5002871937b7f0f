//! Writing to standard output and standard error without dying when they
//! go away.
//!
//! `run ... | head -1` closes the pipe after one line, `> /dev/full` fails
//! every write, and a dropped SSH session to the controller (SIGHUP) takes
//! the terminal with it. `println!` panics on any of these, and a panic in
//! the middle of a run would leave hosts half migrated. What the tool
//! prints is a view of the run, never the run itself: so a failed write is
//! said once on standard error (unless the reader simply left: a closed
//! pipe is no news) and otherwise ignored, and the run and its exit code go
//! on as if it had been read.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output has failed, so the failure is said only once.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Prints `text` on standard output, as `print!` would, without panicking.
pub fn print(text: &str) {
    let _ = Stdout.write_all(text.as_bytes());
    let _ = Stdout.flush();
}

/// Prints `text` and a newline on standard output, as `println!` would.
pub fn println(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    print(&line);
}

/// Prints a line on standard error; if standard error is gone too, there
/// is nobody left to tell.
pub fn eprintln(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// Standard output as a [`Write`] that never fails: the live reporters
/// write through it. After the first failure nothing more is attempted.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDOUT_FAILED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match io::stdout().lock().write_all(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                failed(&e);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if !STDOUT_FAILED.load(Ordering::Relaxed)
            && let Err(e) = io::stdout().lock().flush()
        {
            failed(&e);
        }
        Ok(())
    }
}

fn failed(error: &io::Error) {
    if STDOUT_FAILED.swap(true, Ordering::Relaxed) {
        return;
    }
    if error.kind() != io::ErrorKind::BrokenPipe {
        eprintln(&format!(
            "warning: cannot write to standard output ({error}); the command goes on without it"
        ));
    }
}
