//! The command line, as the README's Commands section documents it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "orchestrate",
    version,
    about = "Move client fleets from one endpoint-security product to another: staged waves, failure budgets, rollback.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a playbook on an inventory's hosts, client by client, in waves.
    Run(RunArgs),
    /// Check a playbook and an inventory; print nothing but problems.
    Validate(ValidateArgs),
    /// Continue a run that was interrupted, crashed or halted.
    Resume(ResumeArgs),
    /// The runs in the journal, or where one run stands.
    Status(StatusArgs),
    /// Render a run's report: html for people, json and junit for machines.
    Report(ReportArgs),
    /// Fetch and record the SSH host keys of the inventory's hosts.
    Keyscan(KeyscanArgs),
    /// Print the JSON Schema (draft 2020-12) of a file format, for editors.
    Schema(SchemaArgs),
    /// Take clients of queued runs (`run --queue`) from a PostgreSQL journal and run them.
    Worker(WorkerArgs),
    /// Answer a queued run's wave confirmation (pause_between_waves: confirm).
    Approve(ApproveArgs),
    /// Run a playbook on a simulated fleet standing in for the inventory's
    /// hosts: the real planner, runner, journal and reports, no real host.
    Rehearse(RehearseArgs),
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The shared journal, postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: PathBuf,
    /// Take only clients pinned to this site (`site:` in the inventory);
    /// without it, only clients pinned to no site.
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Hosts at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: u32,
    /// Exit once every client this worker could take is done, instead of
    /// waiting for more work.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// How host keys are checked.
    #[arg(long, value_enum, default_value_t = HostKeyPolicyArg::Strict)]
    pub host_key_policy: HostKeyPolicyArg,
    /// More detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Args, Debug)]
pub struct RehearseArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// What the simulated hosts answer and how they fail (YAML); default
    /// scenarios/<playbook name>.yml beside the playbooks folder, if there is one.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Share of hosts that fail (0 to 1), each in one of the playbook's
    /// phases that change something; replaces the scenario's fail rates.
    #[arg(long, value_name = "P", value_parser = share)]
    pub fail_rate: Option<f64>,
    /// The seed of everything random in the rehearsal: one seed, one run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Multiplies pauses, waits, retry delays, timeouts (not below 5 s) and
    /// the simulated hosts' own latencies: 0.01 runs a day's rollout in 15 minutes.
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = positive)]
    pub time_scale: f64,
    /// The rehearsals' journal (SQLite); default .orchestrate/rehearsal.db
    /// beside the inventory, apart from the runs' journal.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The queued run (`orchestrate status` lists them).
    pub run_id: String,
    /// The client whose next wave is approved.
    pub client: String,
    /// The shared journal, postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: PathBuf,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "`{text}` is not a share of hosts; write a number from 0 to 1 (0.05 is 5 %)"
        )),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!(
            "`{text}` is not a time scale; write a number above 0 (0.01 is a hundred times faster)"
        )),
    }
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// Which format: playbook, inventory, or a file of steps or phases
    /// that playbooks include.
    #[arg(value_enum)]
    pub kind: crate::load::schema::SchemaKind,
}

#[derive(Args, Debug)]
pub struct KeyscanArgs {
    /// The inventory (YAML).
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// `strict` and `accept-new` record new keys; `off` only shows them.
    #[arg(long, value_enum, default_value_t = HostKeyPolicyArg::Strict)]
    pub host_key_policy: HostKeyPolicyArg,
    /// Hosts scanned at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: u32,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The playbook (YAML).
    pub playbook: PathBuf,
    /// The inventory (YAML).
    #[arg(short = 'i', long = "inventory")]
    pub inventory: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct SelectionArgs {
    /// Only this client (repeat for more).
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Only hosts whose name (or client's name) matches this glob.
    #[arg(long, value_name = "GLOB")]
    pub limit: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Connect to nothing; print what would run where.
    #[arg(long)]
    pub dry_run: bool,
    /// Connect, run only steps marked check_safe, and report what every other step would do.
    #[arg(long, conflicts_with = "dry_run")]
    pub check: bool,
    /// The journal: a SQLite file (default .orchestrate/state.db beside the
    /// inventory) or postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: Option<PathBuf>,
    /// Record the plan in the shared journal (--state postgres://...) and
    /// return at once: `orchestrate worker` runs it.
    #[arg(long, conflicts_with = "dry_run")]
    pub queue: bool,
    /// How host keys are checked.
    #[arg(long, value_enum, default_value_t = HostKeyPolicyArg::Strict)]
    pub host_key_policy: HostKeyPolicyArg,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// What `run`, `resume` and `rehearse` share: how many hosts at once,
/// the answer to confirmations, and what to print and write.
#[derive(Args, Debug, Clone)]
pub struct ExecutionArgs {
    /// Hosts at once across all clients.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: u32,
    /// Answer yes to every confirmation (pause_between_waves: confirm).
    #[arg(long)]
    pub yes: bool,
    /// Write the JSON report here when the run (or rehearsal) ends.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write a JSON-lines trace of every event here.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// More detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run to continue (`orchestrate status` lists them).
    pub run_id: String,
    /// The journal: a SQLite file (default ./.orchestrate/state.db) or
    /// postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: Option<PathBuf>,
    /// Resume even though the playbook or inventory changed since the run started.
    #[arg(long)]
    pub force: bool,
    /// How host keys are checked.
    #[arg(long, value_enum, default_value_t = HostKeyPolicyArg::Strict)]
    pub host_key_policy: HostKeyPolicyArg,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run to show in detail; without it, the runs, newest first.
    pub run_id: Option<String>,
    /// The journal: a SQLite file (default ./.orchestrate/state.db) or
    /// postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub run_id: String,
    #[arg(long, value_enum)]
    pub format: ReportFormat,
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The journal: a SQLite file (default ./.orchestrate/state.db) or
    /// postgres://USER@HOST/DB.
    #[arg(
        long,
        value_name = "FILE|URL",
        env = "ORCHESTRATE_STATE",
        hide_env_values = true
    )]
    pub state: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Json,
    Junit,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicyArg {
    Strict,
    AcceptNew,
    Off,
}

impl From<HostKeyPolicyArg> for crate::transport::HostKeyPolicy {
    fn from(p: HostKeyPolicyArg) -> Self {
        match p {
            HostKeyPolicyArg::Strict => crate::transport::HostKeyPolicy::Strict,
            HostKeyPolicyArg::AcceptNew => crate::transport::HostKeyPolicy::AcceptNew,
            HostKeyPolicyArg::Off => crate::transport::HostKeyPolicy::Off,
        }
    }
}
