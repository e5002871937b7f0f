//! `orchestrate run` (and `--check`) and `orchestrate resume`: wire a plan
//! to the runner, the journal, the observers and the signals, then render
//! the report and exit with the code the run's outcome gives.
//!
//! Every file the run writes (`--report-json`, `--log`) is opened before
//! the journal records the run and before any host is touched: a report
//! that cannot be written must stop the run while nothing has happened, not
//! after every host was migrated.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::args::{ExecutionArgs, Format, ResumeArgs, RunArgs};
use super::operator::{AskOnTerminal, NoTerminal, Signals};
use super::output;
use super::{EXIT_INVALID, plan_from};
use crate::journal::lease::{Holder, LeaseError, LeaseGuard, Resource};
use crate::journal::{self, Journal, Location, RunRow};
use crate::plan::{MissingSecrets, Plan};
use crate::report::run_json::{Report, ReportBuilder};
use crate::report::{lines::Lines, log::JsonLines, progress::Progress, run_json, summary};
use crate::run::{
    self, AlwaysYes, Confirm, Event, Events, HostResume, Interrupt, Observer, Resume, RunOptions,
};
use crate::transport::{
    Connectors, local::LocalConnector, ssh::SshConnector, winrm::WinrmConnector,
};
use tokio_util::sync::CancellationToken;

/// The transports this build has. One connector per kind serves the whole
/// run, so hosts share what they can (a decrypted key, a jump connection).
pub fn connectors() -> Connectors {
    Connectors {
        local: Some(Arc::new(LocalConnector)),
        ssh: Some(Arc::new(SshConnector::new())),
        winrm: Some(Arc::new(WinrmConnector::new())),
    }
}

/// A run about to start or to go on.
struct Launch {
    plan: Plan,
    run_id: String,
    journal: Journal,
    check: bool,
    /// `orchestrate rehearse`: every host is a simulated endpoint.
    rehearsal: bool,
    /// `Some` for `resume`: where hosts stand, and the report so far.
    resume: Option<(Resume, Report)>,
    /// This process's leases on the run and its hosts, held until it ends.
    lease: Leases,
    outputs: Outputs,
}

/// Leases held, and the token cancelled if they are lost mid-run.
pub(super) struct Leases {
    _guard: LeaseGuard,
    pub(super) lost: CancellationToken,
}

/// Takes the leases on run `run_id` and on `hosts` (the ones this process
/// may touch) before any is touched. Held by a live process: the error
/// names it, exit 2. Left by a dead one: taken over with a warning.
fn take_leases(
    journal: &Journal,
    run_id: &str,
    command: &str,
    hosts: impl Iterator<Item = String>,
) -> Result<Leases, i32> {
    let mut resources = vec![Resource::Run(run_id.to_string())];
    resources.extend(hosts.map(Resource::Host));
    take_leases_on(journal, run_id, command, &resources)
}

/// Takes the leases on `resources`, as [`take_leases`] does.
pub(super) fn take_leases_on(
    journal: &Journal,
    run_id: &str,
    command: &str,
    resources: &[Resource],
) -> Result<Leases, i32> {
    let store = match journal.leases() {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_INVALID);
        }
    };
    let lost = CancellationToken::new();
    let on_loss = {
        let lost = lost.clone();
        move |why: String| {
            tracing::error!(
                "{why}; stopping as after Ctrl-C (running steps finish, half-done hosts are rolled back)"
            );
            lost.cancel();
        }
    };
    let holder = Holder::this_process(run_id, command);
    match LeaseGuard::take(store, holder, resources, on_loss) {
        Ok((guard, taken_over)) => {
            for (resource, previous) in taken_over {
                eprintln!(
                    "warning: {resource} was left leased by {previous}, which is gone; taking it over"
                );
            }
            Ok(Leases {
                _guard: guard,
                lost,
            })
        }
        Err(LeaseError::Busy(busy)) => {
            eprintln!(
                "error: {busy}; nothing was started. Wait for it to finish (or stop it); a lease left by a process that died is taken over {}s after its last renewal, or at once on the machine it ran on",
                crate::journal::lease::EXPIRES_AFTER.as_secs()
            );
            Err(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_INVALID)
        }
    }
}

/// The files a run writes, opened (created 0600) before it starts.
struct Outputs {
    log: Option<JsonLines>,
    report_json: Option<(PathBuf, std::fs::File)>,
}

impl Outputs {
    /// Opens every output file of `args`; an error names the file.
    fn open(args: &ExecutionArgs) -> Result<Outputs, String> {
        let log = match &args.log {
            Some(path) => Some(
                JsonLines::create(path)
                    .map_err(|e| format!("cannot write the log {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let report_json = match &args.report_json {
            Some(path) => Some((
                path.clone(),
                crate::owner_only::create(path)
                    .map_err(|e| format!("cannot write the report {}: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(Outputs { log, report_json })
    }
}

pub fn run(plan: Plan, args: &RunArgs) -> i32 {
    launch_run(
        plan,
        args,
        journal::default_path(&args.target.inventory),
        false,
    )
}

/// `orchestrate rehearse`, once its plan points at the simulator: a run in
/// every way but that it says so everywhere (and `resume` refuses it).
/// `default_state` is the rehearsals' own journal.
pub fn rehearse(plan: Plan, args: &RunArgs, default_state: PathBuf) -> i32 {
    launch_run(plan, args, default_state, true)
}

fn launch_run(plan: Plan, args: &RunArgs, default_state: PathBuf, rehearsal: bool) -> i32 {
    let run_id = run::new_run_id();
    let journal = match Location::of(args.state.as_deref(), || default_state)
        .and_then(|location| Journal::open(&location))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    if args.queue && !journal.location().is_postgres() {
        eprintln!(
            "error: --queue needs a journal that workers share: --state postgres://USER@HOST/DB (or ORCHESTRATE_STATE)"
        );
        return EXIT_INVALID;
    }
    // Every file the plan was made from, hashed now, so that `resume`
    // can refuse a plan made from changed files.
    let files = match journal::RecordedFile::hash_all(&plan.files_read) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}, to record it in the journal");
            return EXIT_INVALID;
        }
    };
    let hash_of = |what: &str| {
        files
            .iter()
            .find(|f| f.what == what)
            .map(|f| f.sha256.clone())
            .unwrap_or_default()
    };
    let (playbook_sha256, inventory_sha256) = (hash_of("playbook"), hash_of("inventory"));
    let outputs = match Outputs::open(&args.execution) {
        Ok(outputs) => outputs,
        Err(e) => {
            eprintln!("error: {e}; nothing was run");
            return EXIT_INVALID;
        }
    };
    let row = RunRow {
        run_id: run_id.clone(),
        // Absolute, so the run can be resumed from any folder.
        playbook: absolute(&args.target.playbook),
        inventory: absolute(&args.target.inventory),
        playbook_sha256,
        inventory_sha256,
        options: serde_json::json!({
            "clients": args.selection.clients,
            "limit": args.selection.limit,
            "check": args.check,
            "forks": args.execution.forks,
            "queue": args.queue,
            "yes": args.execution.yes,
            "rehearsal": rehearsal,
        }),
        status: None,
        started_at: run::now(),
        finished_at: None,
    };
    if args.queue {
        return super::queue::enqueue(&plan, &journal, &row, &files, &args.execution);
    }
    let touched = plan
        .hosts()
        .filter(|h| h.skipped.is_none())
        .map(|h| h.name.clone());
    let lease = match take_leases(&journal, &run_id, "run", touched) {
        Ok(lease) => lease,
        Err(code) => return code,
    };
    if let Err(e) = journal
        .start_run(&row)
        .and_then(|()| journal.record_files(&row.run_id, &files))
    {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let launch = Launch {
        plan,
        run_id,
        journal,
        check: args.check,
        rehearsal,
        resume: None,
        lease,
        outputs,
    };
    block_on(drive(launch, &args.execution))
}

pub fn resume(args: &ResumeArgs) -> i32 {
    super::warn_if_unchecked(args.host_key_policy.into());
    let journal = match Location::of(args.state.as_deref(), || {
        PathBuf::from(".orchestrate/state.db")
    })
    .and_then(|location| Journal::open_existing(&location))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let row = match journal.run(&args.run_id) {
        Ok(row) => row,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    if row.options.get("rehearsal").and_then(|v| v.as_bool()) == Some(true) {
        // Resumed as a run, it would go to the inventory's real hosts.
        eprintln!(
            "error: run {} was a rehearsal on a simulated fleet; a rehearsal cannot be resumed: rehearse again",
            row.run_id
        );
        return EXIT_INVALID;
    }
    let (plan, replay) = match replan(
        &journal,
        &row,
        args.force,
        None,
        args.host_key_policy.into(),
    ) {
        Ok(replanned) => replanned,
        Err(code) => return code,
    };
    let touched = still_to_touch(&plan, &replay.hosts);
    let lease = match take_leases(&journal, &row.run_id, "resume", touched.into_iter()) {
        Ok(lease) => lease,
        Err(code) => return code,
    };
    let outputs = match Outputs::open(&args.execution) {
        Ok(outputs) => outputs,
        Err(e) => {
            eprintln!("error: {e}; nothing was resumed");
            return EXIT_INVALID;
        }
    };
    let check = row
        .options
        .get("check")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let launch = Launch {
        plan,
        run_id: row.run_id.clone(),
        journal,
        check,
        rehearsal: false,
        resume: Some((replay.hosts, replay.report)),
        lease,
        outputs,
    };
    block_on(drive(launch, &args.execution))
}

/// Hosts a resumed run may touch: not those done or left for a person.
pub(super) fn still_to_touch(plan: &Plan, resume: &Resume) -> Vec<String> {
    plan.hosts()
        .filter(|h| h.skipped.is_none())
        .filter(|h| {
            !matches!(
                resume.get(&h.name),
                Some(HostResume::Done | HostResume::Leave)
            )
        })
        .map(|h| h.name.clone())
        .collect()
}

/// The plan of a journaled run made again from its files (refused if they
/// changed since it started, unless `force`), and where its hosts stand.
/// `only_client`: a worker's one client of the run.
pub(super) fn replan(
    journal: &Journal,
    row: &RunRow,
    force: bool,
    only_client: Option<&str>,
    host_key_policy: crate::transport::HostKeyPolicy,
) -> Result<(Plan, journal::Replay), i32> {
    let playbook = PathBuf::from(&row.playbook);
    let inventory = PathBuf::from(&row.inventory);
    let changed = match journal.files(row) {
        Ok(recorded) => journal::changes(&row.run_id, &recorded),
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_INVALID);
        }
    };
    if !changed.is_empty() {
        if !force {
            for c in &changed {
                eprintln!("error: {c}");
            }
            eprintln!(
                "Resuming would run a different plan than the one this run started with. Start a new run, or resume with --force to go on with the files as they are now."
            );
            return Err(EXIT_INVALID);
        }
        for c in &changed {
            eprintln!("warning: {c}; going on with it as it is now (--force)");
        }
    }
    let text = |key: &str| {
        row.options
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let clients: Vec<String> = match only_client {
        Some(client) => vec![client.to_string()],
        None => row
            .options
            .get("clients")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
    };
    let target = super::args::Target {
        playbook,
        inventory,
    };
    let selection = super::args::SelectionArgs {
        clients,
        limit: text("limit"),
    };
    let plan = match plan_from(&target, &selection, MissingSecrets::Fail, host_key_policy) {
        Ok(plan) => plan,
        Err(errors) => return Err(super::report_input_errors(&errors)),
    };
    let events = match journal.events(&row.run_id) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(EXIT_INVALID);
        }
    };
    let replay = journal::replay(&events);
    Ok((plan, replay))
}

pub(super) fn absolute(path: &std::path::Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

pub(super) fn block_on(future: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    }
}

async fn drive(launch: Launch, args: &ExecutionArgs) -> i32 {
    let Launch {
        plan,
        run_id,
        journal,
        check,
        rehearsal,
        resume,
        lease,
        outputs,
    } = launch;
    let bars = args.format == Format::Human
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    init_tracing(bars, args.verbose);
    let resumed = match (resume.is_some(), rehearsal) {
        (true, _) => " (resumed)",
        (false, true) => " (rehearsal: simulated hosts only)",
        (false, false) => "",
    };
    match args.format {
        Format::Human => output::println(&format!("run id: {run_id}{resumed}")),
        Format::Json => output::eprintln(&format!("run id: {run_id}{resumed}")),
    }

    let (resume, seed) = match resume {
        Some((hosts, report)) => (Some(hosts), report),
        None => (None, Report::default()),
    };
    // Where the run's earlier processes left each host: part of its outcome.
    let earlier = seed.hosts().map(|h| (h.name.clone(), h.status)).collect();
    let report = ReportBuilder {
        report: Arc::new(std::sync::Mutex::new(seed)),
    };
    let interrupt = Interrupt::default();
    // Watched from here on: a signal while the journal opens still stops
    // the run the soft way.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot watch for signals: {e}");
            return EXIT_INVALID;
        }
    };
    let writer = match journal.writer(&run_id, interrupt.soft.clone()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    // The journal first: what it has recorded, the run has done.
    let mut observers: Vec<Box<dyn Observer>> = vec![Box::new(writer), Box::new(report.clone())];
    if let Some(log) = outputs.log {
        observers.push(Box::new(log));
    }
    match (args.format, bars) {
        (Format::Human, true) => observers.push(Box::new(Progress::default())),
        (Format::Human, false) => {
            observers.push(Box::new(Lines::new(output::Stdout, args.verbose > 0)))
        }
        (Format::Json, _) => {
            observers.push(Box::new(Lines::new(std::io::stderr(), args.verbose > 0)))
        }
    }
    let events = Arc::new(Events::new(observers));

    signals.watch(interrupt.clone(), Arc::clone(&events));
    {
        // Leases lost mid-run (taken over, or the journal unreachable):
        // stop as after Ctrl-C, since another process may take the hosts.
        let (interrupt, events, lost) =
            (interrupt.clone(), Arc::clone(&events), lease.lost.clone());
        tokio::spawn(async move {
            lost.cancelled().await;
            interrupt.soft.cancel();
            events.emit(Event::Interrupting);
        });
    }
    let confirm: Arc<dyn Confirm> = if args.yes {
        Arc::new(AlwaysYes)
    } else if std::io::stdin().is_terminal() {
        Arc::new(AskOnTerminal::new(bars))
    } else {
        Arc::new(NoTerminal)
    };
    let options = RunOptions {
        run_id,
        forks: args.forks as usize,
        check,
        rehearsal,
        confirm,
        resume,
        earlier,
        clock: clock_from_env(),
    };
    let outcome = run::execute(
        Arc::new(plan),
        connectors(),
        options,
        Arc::clone(&events),
        interrupt,
    )
    .await;

    let report = report.take();
    if let Some((path, file)) = outputs.report_json
        && let Err(e) = run_json::write(&report, file)
    {
        output::eprintln(&format!(
            "error: cannot write the report {}: {e}",
            path.display()
        ));
    }
    match args.format {
        Format::Human => output::print(&summary::render(&report)),
        Format::Json => output::println(&run_json::render(&report)),
    }
    drop(lease);
    outcome.exit_code()
}

pub(super) fn init_tracing(bars: bool, verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    let fmt = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false);
    if bars {
        let layer = tracing_indicatif::IndicatifLayer::new();
        let _ = tracing_subscriber::registry()
            .with(
                fmt.with_writer(layer.get_stderr_writer())
                    .with_filter(filter),
            )
            .with(layer)
            .try_init();
    } else {
        let _ = tracing_subscriber::registry()
            .with(fmt.with_writer(std::io::stderr).with_filter(filter))
            .try_init();
    }
}

/// The run's clock: the system's, or, for tests, one that starts at
/// `ORCHESTRATE_NOW` (RFC 3339) and runs on at the real pace.
pub(super) fn clock_from_env() -> run::Clock {
    std::env::var("ORCHESTRATE_NOW")
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| run::Clock::starting_at(t.with_timezone(&chrono::Utc)))
        .unwrap_or_default()
}
