//! Carrying out one rendered action over a session: a shell command, a
//! script (uploaded, run, removed), an upload, a reboot or a wait.
//!
//! Kept apart from the step's rules in [`super::attempt`] because this is
//! the one place that knows how each action maps onto the transport's four
//! verbs; an attempt only sees an [`Execution`]. It reads the host's
//! context and nothing else of the host's run.
//!
//! Every action is held to its timeout (see [`super::deadline`]): one
//! deadline for the whole action, so a `script` step's upload and run
//! share it; a reboot waits for the host no longer than it.
//!
//! With `become`, commands carry [`Command::become`] and the transport runs
//! them as the become user; an upload cannot (SFTP writes as the login
//! user), so it goes to a private temporary path first and a `become`
//! command copies it into place, owned by the become user.
//!
//! A `script` step's arguments go inside a shell script's copy, never on
//! its command line (see `script_args`). That copy is private to the login
//! user, which root can read but another become user cannot: for a become
//! user other than root, the copy goes on the become shell's standard
//! input instead, after the script that writes it into a fresh 0700 folder
//! of that user's and runs it ([`copy_from_stdin_and_run`]), so no argument
//! of any process carries it. A script whose arguments cannot go inside
//! (not a shell script) gets them on its command line, so one that holds a
//! secret is refused (at plan time; here again for one rendered at run time).

use super::context::HostRun;
use super::deadline::{Deadline, Sent, Written, upload_within};
use crate::plan::{ActionKind, RenderedAction};
use crate::transport::upload::UploadSources;
use crate::transport::{
    BoundedOutput, Command, Execution, ExitStatus, Script, Session, TransportError, UploadSource,
};

/// The files uploaded by this process, each hashed once for every host that
/// gets it. Process-wide: a file is the same file for every run and host,
/// and a changed file is noticed (and hashed again) by its size and time.
static UPLOAD_SOURCES: std::sync::LazyLock<UploadSources> =
    std::sync::LazyLock::new(UploadSources::default);

/// What carrying out an action came to.
pub(super) struct Performed {
    pub(super) execution: Execution,
    /// With [`ExitStatus::TimedOut`]: what the timeout stopped, and what
    /// became of it, to follow "timed out after 5s" in the step's record.
    pub(super) stopped: String,
    /// A `reboot:` step whose reboot was not allowed (the operator said
    /// no, nobody could be asked, `reboot_with_users: refuse`): why. Not a
    /// transport error, so that the step is not tried again only to be
    /// refused again.
    pub(super) reboot_refused: Option<String>,
}

impl From<Execution> for Performed {
    fn from(execution: Execution) -> Performed {
        Performed {
            execution,
            stopped: " and was killed".into(),
            reboot_refused: None,
        }
    }
}

fn done() -> Performed {
    Execution {
        status: ExitStatus::Code(0),
        stdout: BoundedOutput::default(),
        stderr: BoundedOutput::default(),
    }
    .into()
}

fn timed_out(stopped: String) -> Performed {
    Performed {
        execution: Execution {
            status: ExitStatus::TimedOut,
            stdout: BoundedOutput::default(),
            stderr: BoundedOutput::default(),
        },
        stopped,
        reboot_refused: None,
    }
}

/// Carries out a rendered action over the session, within its timeout.
pub(super) async fn perform(
    run: &HostRun<'_>,
    session: &dyn Session,
    step: &str,
    action: &RenderedAction,
    r#become: bool,
) -> Result<Performed, TransportError> {
    let deadline = Deadline::after(action.timeout);
    let command = |script: Script| {
        let mut command = Command::new(script);
        command.timeout = deadline.left();
        command.r#become = r#become;
        command
    };
    match &action.kind {
        ActionKind::Shell(script) => Ok(session
            .execute(&command(script.clone()), None)
            .await?
            .into()),
        ActionKind::Script { src, args } => {
            let source = local_source(src).await?;
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into());
            // A shell script's arguments go inside its copy, kept from
            // other users, not on its command line (see `script_args`).
            let inside = match run.host.os.is_posix() && !args.is_empty() {
                true => args_inside(&source, args).await?,
                false => None,
            };
            let readable_by_become = !r#become || run.host.target.r#become.user == "root";
            let (source, mode, args) = match inside {
                Some(copy) if !readable_by_become => {
                    return copy_from_stdin_and_run(session, &copy, &name, command).await;
                }
                Some(copy) => (copy, 0o700, &[][..]),
                None if run.host.os.is_posix()
                    && args
                        .iter()
                        .any(|a| run.redactor.current().finds_secret(a.as_bytes())) =>
                {
                    return Err(TransportError::Other(format!(
                        "{name} is not a shell script, so its arguments would go on its \
                         command line, readable by every user of the endpoint, and one of them \
                         holds a secret: wrap it in a shell script, or have it read the secret \
                         from a file uploaded with `upload:`"
                    )));
                }
                None => (source, 0o755, &args[..]),
            };
            let remote = session.temp_path(&name);
            let sent =
                upload_within(session, &source, &remote, mode, Written::InPlace, deadline).await?;
            if let Sent::Cut(what) = sent {
                return Ok(timed_out(format!(" before the script ran: {what}")));
            }
            let result = if deadline.passed() {
                Ok(timed_out(
                    " before the script ran: its upload took all the time".into(),
                ))
            } else {
                let line = script_command(run, &remote, &name, args);
                session
                    .execute(&command(line), None)
                    .await
                    .map(Performed::from)
            };
            // The copy goes whatever happened; a failure to remove it is
            // not worth failing the step for.
            let _ = session.remove(&remote).await;
            result
        }
        ActionKind::Upload { src, dest, mode } if r#become => {
            let source = local_source(src).await?;
            let staged = session.temp_path("upload");
            let sent =
                upload_within(session, &source, &staged, 0o600, Written::InPlace, deadline).await?;
            if let Sent::Cut(what) = sent {
                return Ok(timed_out(format!(
                    ": {what}, and {dest} was left as it was"
                )));
            }
            let moved = session
                .execute(
                    &command(Script::Sh(move_into_place(&staged, dest, *mode))),
                    None,
                )
                .await;
            // Normally gone already; a failed move leaves it to remove here.
            let _ = session.remove(&staged).await;
            let moved = moved?;
            if moved.status != ExitStatus::Code(0) {
                return Ok(moved.into());
            }
            Ok(done())
        }
        ActionKind::Upload { src, dest, mode } => {
            let source = local_source(src).await?;
            let written = Written::Beside(run.host.os);
            match upload_within(session, &source, dest, *mode, written, deadline).await? {
                Sent::Whole => Ok(done()),
                Sent::Cut(what) => Ok(timed_out(format!(": {what}"))),
            }
        }
        ActionKind::Reboot => {
            if let Err(why) = super::reboot::permit(run, session, step).await {
                return Ok(Performed {
                    reboot_refused: Some(why),
                    ..done()
                });
            }
            session.reboot(action.reboot_wait()).await?;
            Ok(done())
        }
        ActionKind::Wait(duration) => {
            // The one action that runs on the controller: the first signal
            // ends it, as it would end a command's wait for a host. Cut
            // short, the step did not do what it was for, so it fails and
            // the host is rolled back like any host caught half-way.
            let started = std::time::Instant::now();
            // Never longer than its timeout (the loader refuses that), but
            // held to it all the same.
            let (sleep, cut) = match deadline.left() {
                Some(left) if left < *duration => (left, true),
                _ => (*duration, false),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => Ok(if cut {
                    timed_out(" before the wait was over".into())
                } else {
                    done()
                }),
                _ = run.stop.cancelled() => Err(TransportError::Other(format!(
                    "the wait of {} was cut short after {:.1}s: the run was interrupted",
                    crate::load::HumanDuration(*duration),
                    started.elapsed().as_secs_f64()
                ))),
            }
        }
    }
}

/// As the become user: copy the staged upload beside `dest` (so the copy
/// is the become user's and `dest` is replaced in one rename), set its
/// mode, rename it over `dest`, and remove the staged file.
fn move_into_place(staged: &str, dest: &str, mode: u32) -> String {
    use crate::quote::sh_quote;
    let next = sh_quote(&format!("{dest}.orchestrate-new"));
    let (staged, dest) = (sh_quote(staged), sh_quote(dest));
    format!(
        "umask 077 && cp {staged} {next} && chmod {mode:04o} {next} && mv -f {next} {dest} \
         && rm -f {staged} || {{ rm -f {next}; exit 1; }}"
    )
}

/// For a become user other than root, who cannot read the login user's
/// private copy: the become shell reads, after the script below, the copy
/// (its arguments inside) on its standard input, writes it with `cat` into
/// a fresh 0700 folder made by that user (`mkdir` of an unguessable name in
/// `/tmp`, which fails rather than follow anything planted there), runs it,
/// removes the folder and exits with the script's code. The script gets end
/// of file on its standard input, as a copy run the usual way does. Killed
/// at its timeout, the shell cannot remove the folder: a second command,
/// as the become user too, does.
async fn copy_from_stdin_and_run(
    session: &dyn Session,
    copy: &UploadSource,
    name: &str,
    command: impl Fn(Script) -> Command,
) -> Result<Performed, TransportError> {
    use crate::quote::sh_quote;
    let folder = crate::transport::temp_path(
        crate::transport::Os::Linux,
        &crate::transport::unguessable(),
        name,
    );
    let file = sh_quote(&format!("{folder}/{name}"));
    let dir = sh_quote(&folder);
    let script = format!(
        "umask 077\n\
         mkdir {dir} || exit 125\n\
         {{ cat > {file} && chmod 700 {file}; }} || {{ rm -rf {dir}; exit 125; }}\n\
         {file}\n\
         orchestrate_status=$?\n\
         rm -rf {dir}\n\
         exit $orchestrate_status"
    );
    let mut contents = Vec::with_capacity(copy.len() as usize);
    copy.copy_to(&mut contents)
        .await
        .map_err(|e| TransportError::Other(format!("cannot read the script's copy: {e}")))?;
    let mut run = command(Script::Sh(script));
    run.stdin = Some(contents);
    let result = session.execute(&run, None).await;
    if matches!(&result, Ok(e) if e.status == ExitStatus::TimedOut) {
        let mut remove = command(Script::Sh(format!("rm -rf {dir}")));
        remove.timeout = Some(std::time::Duration::from_secs(30));
        let _ = session.execute(&remove, None).await;
    }
    result.map(Performed::from)
}

/// The copy of a shell script with `args` set inside it; `None`: not a
/// shell script (or too large to rewrite), so they stay arguments.
async fn args_inside(
    source: &UploadSource,
    args: &[String],
) -> Result<Option<UploadSource>, TransportError> {
    use crate::transport::script_args;
    if source.len() >= script_args::MAX_REWRITTEN {
        return Ok(None);
    }
    let mut contents = Vec::with_capacity(source.len() as usize);
    source.copy_to(&mut contents).await.map_err(|e| {
        TransportError::Other(format!("cannot read {}: {e}", source.path().display()))
    })?;
    Ok(script_args::with_args_inside(&contents, args)
        .map(|copy| UploadSource::in_memory(source.path(), copy)))
}

async fn local_source(src: &std::path::Path) -> Result<UploadSource, TransportError> {
    UPLOAD_SOURCES.get(src).await.map_err(|e| {
        TransportError::Other(format!(
            "cannot read {} on this controller: {e}",
            src.display()
        ))
    })
}

/// How an uploaded script is started: by its interpreter on Windows, as an
/// executable elsewhere.
fn script_command(run: &HostRun<'_>, remote: &str, name: &str, args: &[String]) -> Script {
    use crate::quote::{ps_quote, sh_quote};
    if run.host.os.is_posix() {
        let mut line = sh_quote(remote);
        for arg in args {
            line.push(' ');
            line.push_str(&sh_quote(arg));
        }
        Script::Sh(line)
    } else if name.ends_with(".bat") || name.ends_with(".cmd") {
        let mut line = format!("\"{remote}\"");
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        Script::Cmd(line)
    } else {
        let mut line = format!("& {}", ps_quote(remote));
        for arg in args {
            line.push(' ');
            line.push_str(&ps_quote(arg));
        }
        Script::PowerShell(line)
    }
}
