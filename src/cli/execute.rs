//! `orchestrate run` for real (and `--check`): wire a plan to the runner,
//! the observers and Ctrl-C, then turn the report into an exit code.

use std::io::IsTerminal;
use std::sync::Arc;

use async_trait::async_trait;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::args::{Format, RunArgs};
use crate::plan::Plan;
use crate::report::{lines::Lines, log::JsonLines, progress::Progress, run_json, summary};
use crate::run::{self, AlwaysYes, Confirm, Event, Events, Interrupt, Observer, RunOptions};
use crate::transport::{Connectors, local::LocalConnector};

/// The transports this build has.
pub fn connectors() -> Connectors {
    Connectors {
        local: Some(Arc::new(LocalConnector)),
        ..Default::default()
    }
}

pub fn run(plan: Plan, args: &RunArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(run_async(plan, args))
}

async fn run_async(plan: Plan, args: &RunArgs) -> i32 {
    let run_id = run::new_run_id();
    let bars = args.format == Format::Human
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    init_tracing(bars, args.verbose);
    match args.format {
        Format::Human => println!("run id: {run_id}"),
        Format::Json => eprintln!("run id: {run_id}"),
    }

    let report = run_json::ReportBuilder::default();
    let mut observers: Vec<Box<dyn Observer>> = vec![Box::new(report.clone())];
    if let Some(path) = &args.log {
        match JsonLines::create(path) {
            Ok(log) => observers.push(Box::new(log)),
            Err(e) => {
                eprintln!("error: cannot write the log {}: {e}", path.display());
                return super::EXIT_INVALID;
            }
        }
    }
    match (args.format, bars) {
        (Format::Human, true) => observers.push(Box::new(Progress::default())),
        (Format::Human, false) => {
            observers.push(Box::new(Lines::new(std::io::stdout(), args.verbose > 0)))
        }
        (Format::Json, _) => {
            observers.push(Box::new(Lines::new(std::io::stderr(), args.verbose > 0)))
        }
    }
    let events = Arc::new(Events::new(observers));

    let interrupt = Interrupt::default();
    watch_ctrl_c(interrupt.clone(), Arc::clone(&events));
    let confirm: Arc<dyn Confirm> = if args.yes {
        Arc::new(AlwaysYes)
    } else if std::io::stdin().is_terminal() {
        Arc::new(AskOnTerminal::default())
    } else {
        Arc::new(NoTerminal)
    };
    let options = RunOptions {
        run_id,
        forks: args.forks as usize,
        check: args.check,
        confirm,
    };
    run::execute(
        Arc::new(plan),
        connectors(),
        options,
        Arc::clone(&events),
        interrupt,
    )
    .await;

    let report = report.snapshot();
    if let Some(path) = &args.report_json {
        if let Err(e) = std::fs::write(path, run_json::render(&report)) {
            eprintln!("error: cannot write the report {}: {e}", path.display());
        }
    }
    match args.format {
        Format::Human => print!("{}", summary::render(&report)),
        Format::Json => println!("{}", run_json::render(&report)),
    }
    report.exit_code()
}

fn init_tracing(bars: bool, verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    if bars {
        let layer = tracing_indicatif::IndicatifLayer::new();
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_target(false)
                    .with_writer(layer.get_stderr_writer())
                    .with_filter(filter),
            )
            .with(layer)
            .try_init();
    } else {
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init();
    }
}

/// First Ctrl-C: finish gracefully. Second: stop at once.
fn watch_ctrl_c(interrupt: Interrupt, events: Arc<Events>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        interrupt.soft.cancel();
        events.emit(Event::Interrupting);
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.hard.cancel();
        }
    });
}

/// `pause_between_waves: confirm` on a terminal.
#[derive(Default)]
struct AskOnTerminal {
    /// One question at a time, when several clients reach a pause together.
    asking: tokio::sync::Mutex<()>,
}

#[async_trait]
impl Confirm for AskOnTerminal {
    async fn confirm(&self, client: &str, next_wave: usize, so_far: &str) -> Result<(), String> {
        let _one_at_a_time = self.asking.lock().await;
        let question = format!("{client}: start wave {next_wave}? ({so_far}) [y/N] ");
        let answer = tokio::task::spawn_blocking(move || {
            tracing_indicatif::suspend_tracing_indicatif(|| {
                use std::io::Write;
                eprint!("{question}");
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            })
        })
        .await;
        match answer {
            Ok(Ok(line)) if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") => Ok(()),
            _ => Err(format!("the operator did not confirm wave {next_wave}")),
        }
    }
}

/// `pause_between_waves: confirm` with nobody to ask.
struct NoTerminal;

#[async_trait]
impl Confirm for NoTerminal {
    async fn confirm(&self, _client: &str, next_wave: usize, _so_far: &str) -> Result<(), String> {
        Err(format!(
            "wave {next_wave} needs confirmation (pause_between_waves: confirm) and there is no terminal to ask; run with --yes to go on without asking"
        ))
    }
}
