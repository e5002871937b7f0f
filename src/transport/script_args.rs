//! A `script` step's arguments inside the script's copy, not on its
//! command line.
//!
//! The kernel shows every process's arguments to every user of the machine
//! (`/proc/PID/cmdline`, `ps`), so `/tmp/orchestrate-...-step.sh SECRET`
//! gives the secret away however the command reached the shell. For a
//! shell script the arguments can go inside the uploaded copy instead: a
//! `set -- 'ARG'...;` put in front of its first line after the `#!` line
//! (so line numbers in its error messages stay right) sets `$1`, `$2`, ...
//! as the command line would have, and the copy runs with no arguments,
//! still as itself (its `#!` interpreter, `$0` its path). The copy is then
//! readable by its owner only.
//!
//! Only shell scripts: `set --` means the same to sh, bash, dash, ksh,
//! mksh and zsh, while a Python or Perl script, or a binary, has no such
//! line (their arguments stay process arguments, as the README says).
//! On Windows nothing is needed: a `.ps1` runs inside the step's
//! PowerShell (`& 'path' 'arg'`), a `.cmd` or `.bat` inside the step's
//! cmd.exe, both reading their commands from stdin.

/// Shells whose `set --` sets the positional parameters.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ksh", "mksh", "zsh", "ash", "yash"];

/// Scripts this long or longer are not rewritten (read whole in memory).
pub const MAX_REWRITTEN: u64 = 16 * 1024 * 1024;

/// Whether `head` (the file's first bytes) starts a shell script: text with
/// a `#!` naming one of [`SHELLS`] (directly or through `env`), or text
/// with no `#!` at all, which a POSIX shell runs as a shell script.
pub fn is_shell_script(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(512)];
    // A binary (an ELF executable) or text in no UTF-8: not rewritten.
    if sample.contains(&0) {
        return false;
    }
    if let Err(e) = std::str::from_utf8(sample)
        && e.error_len().is_some()
    {
        return false;
    }
    let Some(rest) = head.strip_prefix(b"#!") else {
        return true;
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(program) = words.next() else {
        return false;
    };
    let mut name = program.rsplit('/').next().unwrap_or(program);
    if name == "env" {
        name = words.find(|w| !w.starts_with('-')).unwrap_or("");
        name = name.rsplit('/').next().unwrap_or(name);
    }
    SHELLS.contains(&name)
}

/// Why the arguments of the local script at `path` would stay on its
/// command line on a POSIX host (not a shell script, or too large to
/// rewrite), or `None` when they go inside its copy.
pub fn why_args_stay_outside(path: &std::path::Path) -> std::io::Result<Option<&'static str>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() >= MAX_REWRITTEN {
        return Ok(Some(
            "is 16 MiB or more, too large to have its arguments set inside its copy",
        ));
    }
    let mut head = Vec::with_capacity(512);
    file.take(512).read_to_end(&mut head)?;
    Ok((!is_shell_script(&head))
        .then_some("is not a shell script (a binary, or its `#!` line names no POSIX shell)"))
}

/// The copy of shell script `script` with `args` set inside it (see the
/// module), or `None` when it is not a shell script.
pub fn with_args_inside(script: &[u8], args: &[String]) -> Option<Vec<u8>> {
    if !is_shell_script(script) {
        return None;
    }
    let mut set = String::from("set --");
    for arg in args {
        set.push(' ');
        set.push_str(&crate::quote::sh_quote(arg));
    }
    set.push_str("; ");
    let at = if script.starts_with(b"#!") {
        match script.iter().position(|&b| b == b'\n') {
            Some(end) => end + 1,
            None => {
                let mut out = script.to_vec();
                out.push(b'\n');
                out.extend_from_slice(set.trim_end().as_bytes());
                out.push(b'\n');
                return Some(out);
            }
        }
    } else {
        0
    };
    let mut out = Vec::with_capacity(script.len() + set.len());
    out.extend_from_slice(&script[..at]);
    out.extend_from_slice(set.as_bytes());
    out.extend_from_slice(&script[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_scripts_are_told_apart_from_other_programs() {
        for shell in [
            &b"#!/bin/sh\necho"[..],
            b"#!/bin/bash -e\n",
            b"#! /usr/bin/env bash\n",
            b"#!/usr/bin/env -S zsh -f\n",
            b"echo no interpreter line\n",
            b"",
        ] {
            assert!(is_shell_script(shell), "{}", String::from_utf8_lossy(shell));
        }
        for other in [
            &b"#!/usr/bin/env python3\n"[..],
            b"#!/usr/bin/perl -w\n",
            b"\x7fELF\x02\x01\x01\x00\x00\x00",
            b"#!\n",
        ] {
            assert!(
                !is_shell_script(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    fn run(script: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        std::fs::write(&path, script).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // dash and bash both name the line of a command not found.
        let line = err.split(": ").find(|w| w.parse::<u32>().is_ok());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            line.unwrap_or("")
        )
    }

    #[test]
    fn the_arguments_reach_the_script_and_its_line_numbers_stay() {
        let args = ["it's a secret".to_string(), "$HOME *".to_string()];
        let script = b"#!/bin/sh\necho \"$#|$1|$2\"\nno-such-command-here\n";
        let copy = with_args_inside(script, &args).unwrap();
        assert!(copy.starts_with(b"#!/bin/sh\nset -- 'it'\\''s a secret' '$HOME *'; echo"));
        assert_eq!(run(&copy), "2|it's a secret|$HOME *\n3");
        // No `#!`: the first line; only a `#!`: a line of its own.
        assert_eq!(
            run(&with_args_inside(b"echo \"$1\"", &args).unwrap()),
            "it's a secret\n"
        );
        assert_eq!(
            with_args_inside(b"#!/bin/sh", &args[..1]).unwrap(),
            b"#!/bin/sh\nset -- 'it'\\''s a secret';\n".to_vec()
        );
        assert_eq!(with_args_inside(b"#!/usr/bin/python3\n", &args), None);
    }
}
