//! The command line: parse arguments, call load → plan → run → report, and
//! turn the outcome into an exit code.
//!
//! Exit codes (the README): 0 every selected host succeeded; 1 a host failed,
//! was unreachable, or a client was halted; 2 invalid input; 3 a rollback
//! failed somewhere; 130 interrupted.

mod args;
mod execute;
mod inspect;
mod keyscan;
mod operator;
mod output;
mod queue;
mod rehearse;
mod worker;

use std::io::IsTerminal;

use clap::Parser;

pub use args::{Cli, Command, Format};

use crate::load::{InputErrors, load_inventory, load_playbook};
use crate::plan::{MissingSecrets, Plan, PlanOptions, Selection, build_plan};

pub const EXIT_OK: i32 = 0;
pub const EXIT_INVALID: i32 = 2;

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            };
        }
    };
    install_error_renderer();
    match cli.command {
        Command::Validate(a) => {
            match plan_from(
                &a.target,
                &a.selection,
                MissingSecrets::Placeholder,
                Default::default(),
            ) {
                Ok(plan) => {
                    let problems = crate::plan::syntax::check_scripts(&plan);
                    if problems.is_empty() {
                        EXIT_OK
                    } else {
                        report_input_errors(&InputErrors(problems))
                    }
                }
                Err(errors) => report_input_errors(&errors),
            }
        }
        Command::Run(a) => {
            // A queued run's secrets are the workers' to have.
            let missing = if a.dry_run || a.queue {
                MissingSecrets::Placeholder
            } else {
                MissingSecrets::Fail
            };
            let policy = a.host_key_policy.into();
            if !a.dry_run {
                warn_if_unchecked(policy);
            }
            let plan = match plan_from(&a.target, &a.selection, missing, policy) {
                Ok(plan) => plan,
                Err(errors) => return report_input_errors(&errors),
            };
            if a.dry_run {
                let text = match a.execution.format {
                    Format::Human => crate::report::plan_text::render(&plan),
                    Format::Json => crate::report::plan_json::render(&plan),
                };
                output::println(text.trim_end());
                return EXIT_OK;
            }
            execute::run(plan, &a)
        }
        Command::Resume(a) => execute::resume(&a),
        Command::Status(a) => inspect::status(&a),
        Command::Report(a) => inspect::report(&a),
        Command::Keyscan(a) => keyscan::keyscan(&a),
        Command::Rehearse(a) => rehearse::rehearse(&a),
        Command::Worker(a) => worker::worker(&a),
        Command::Approve(a) => queue::approve(&a),
        Command::Schema(a) => {
            use std::io::Write as _;
            let schema = crate::load::schema::schema(a.kind);
            let text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
            // A closed stdout (`| head`) is the reader's choice, not an error.
            let _ = writeln!(std::io::stdout(), "{text}");
            EXIT_OK
        }
    }
}

pub(crate) fn plan_from(
    target: &args::Target,
    selection: &args::SelectionArgs,
    missing_secrets: MissingSecrets,
    host_key_policy: crate::transport::HostKeyPolicy,
) -> Result<Plan, InputErrors> {
    let (playbook, inventory) = load_pair(target)?;
    let options = PlanOptions {
        selection: Selection {
            clients: selection.clients.clone(),
            limit: selection.limit.clone(),
        },
        missing_secrets,
        host_key_policy,
    };
    build_plan(playbook, &inventory, &options)
}

/// The playbook and the inventory of `target`, loaded and checked.
pub(crate) fn load_pair(
    target: &args::Target,
) -> Result<(crate::load::Playbook, crate::load::Inventory), InputErrors> {
    // Both files are read and checked before giving up, so one run shows
    // the problems of both.
    let playbook = load_playbook(&target.playbook);
    let inventory = load_inventory(&target.inventory);
    let (playbook, inventory) = match (playbook, inventory) {
        (Ok(p), Ok(i)) => (p, i),
        (p, i) => {
            let mut all = Vec::new();
            if let Err(e) = p {
                all.extend(e.0);
            }
            if let Err(e) = i {
                all.extend(e.0);
            }
            return Err(InputErrors(all));
        }
    };
    Ok((playbook, inventory))
}

/// `--host-key-policy off` is allowed, never silent.
pub(crate) fn warn_if_unchecked(policy: crate::transport::HostKeyPolicy) {
    if policy == crate::transport::HostKeyPolicy::Off {
        eprintln!(
            "warning: --host-key-policy off: SSH host keys are not checked, so anything between this machine and the hosts can pose as them and receive every command and secret; use it only on a network you control, then run `orchestrate keyscan` and go back to strict"
        );
    }
}

fn install_error_renderer() {
    let fancy = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| {
        // Logs and CI consoles get plain ASCII: a `^` under the culprit.
        let theme = if fancy {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::none()
        };
        Box::new(miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1))
    }));
}

/// Prints every input error with its source snippet; exit code 2.
pub(crate) fn report_input_errors(errors: &InputErrors) -> i32 {
    for error in &errors.0 {
        eprintln!("{:?}", miette::Report::new(error.clone()));
    }
    if errors.0.len() > 1 {
        eprintln!("{} problems found.", errors.0.len());
    }
    EXIT_INVALID
}
