//! `orchestrate run --queue` and `orchestrate approve`: a run recorded in
//! the shared journal for workers to take, and the answers its wave
//! confirmations wait for.
//!
//! Queuing records exactly what a `run` records before its first host (the
//! run, the hashes of its files, its `RunStarted` event with every client,
//! wave and host), plus one row of work per client, and returns: the
//! workers replan from the recorded files (and refuse if they changed),
//! with their own secrets, so no secret ever goes into the database.

use super::EXIT_INVALID;
use super::args::{ApproveArgs, ExecutionArgs};
use super::output;
use crate::journal::postgres::queue::{Approval, Item, Queue};
use crate::journal::{Journal, Location, RecordedFile, RunRow};
use crate::plan::Plan;

/// The shared journal's queue at `location`, or why there is none.
pub(super) fn queue_at(location: &Location) -> Result<Queue, String> {
    match location {
        Location::Postgres(target) => {
            Queue::open(target).map_err(|e| format!("journal {target}: {e}"))
        }
        Location::File(path) => Err(format!(
            "{}: workers, queues and approvals need a journal they share: --state postgres://USER@HOST/DB (or ORCHESTRATE_STATE)",
            path.display()
        )),
    }
}

pub(super) fn enqueue(
    plan: &Plan,
    journal: &Journal,
    row: &RunRow,
    files: &[RecordedFile],
    args: &ExecutionArgs,
) -> i32 {
    let queue = match queue_at(journal.location()) {
        Ok(queue) => queue,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let check = row.options.get("check").and_then(|v| v.as_bool()) == Some(true);
    let started = chrono::Utc::now();
    let items: Vec<Item<'_>> = plan
        .clients
        .iter()
        .map(|c| Item {
            client: &c.name,
            site: c.site.as_deref(),
        })
        .collect();
    let recorded = journal
        .start_run(row)
        .and_then(|()| journal.record_files(&row.run_id, files))
        .and_then(|()| {
            journal.append(
                &row.run_id,
                &crate::run::timestamp(started),
                &crate::run::run_started(plan, &row.run_id, check, started),
            )
        })
        .map_err(|e| e.to_string())
        .and_then(|()| queue.enqueue(&row.run_id, &items));
    if let Err(e) = recorded {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let say = |text: &str| match args.format {
        super::Format::Human => output::println(text),
        super::Format::Json => output::eprintln(text),
    };
    say(&format!("run id: {} (queued)", row.run_id));
    for c in &plan.clients {
        let site = c
            .site
            .as_ref()
            .map(|s| format!(" (site {s}: only `orchestrate worker --site {s}` takes it)"))
            .unwrap_or_default();
        say(&format!(
            "queued client {}{site}",
            crate::report::terminal::inert(&c.name)
        ));
    }
    say(
        "`orchestrate worker --state ...` runs it; `orchestrate status RUN_ID --state ...` shows where it stands",
    );
    0
}

pub(super) fn approve(args: &ApproveArgs) -> i32 {
    let fail = |e: String| {
        eprintln!("error: {e}");
        EXIT_INVALID
    };
    let location = match Location::parse(&args.state) {
        Ok(location) => location,
        Err(e) => return fail(e.to_string()),
    };
    let queue = match queue_at(&location) {
        Ok(queue) => queue,
        Err(e) => return fail(e),
    };
    let journal = match Journal::open(&location) {
        Ok(journal) => journal,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = journal.run(&args.run_id) {
        return fail(e.to_string());
    }
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "someone".into()),
        crate::journal::lease::machine_name()
    );
    let client = crate::report::terminal::inert(&args.client);
    match queue.approve(&args.run_id, &args.client, &by) {
        Ok(Approval::Approved { wave }) => {
            output::println(&format!(
                "approved wave {wave} of client {client} in run {}",
                args.run_id
            ));
            0
        }
        Ok(Approval::NotAsked) => fail(format!(
            "client {client} of run {} is not waiting for a confirmation (`orchestrate status {} --state ...` shows where it stands)",
            args.run_id, args.run_id
        )),
        Err(e) => fail(format!("journal {location}: {e}")),
    }
}
