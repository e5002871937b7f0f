//! The two journals the journal tests run against (one test body, two
//! backends): SQLite beside the inventory, and a database of its own on
//! this test process's PostgreSQL server (`support::postgres`).
#![allow(dead_code)]

use crate::harness::Scratch;
use crate::support::postgres::server;

/// Where a journal test keeps its journal.
pub enum Journal {
    /// `.orchestrate/state.db` beside the inventory (the default place).
    Sqlite,
    /// A database of its own on the test server.
    Postgres { url: String, db: String },
}

impl Journal {
    pub fn sqlite() -> Journal {
        Journal::Sqlite
    }

    /// A fresh database on this process's server.
    pub fn postgres() -> Journal {
        let url = server().database();
        let db = url.rsplit('/').next().unwrap().to_string();
        Journal::Postgres { url, db }
    }

    /// What `--state` says.
    pub fn state(&self) -> &str {
        match self {
            Journal::Sqlite => crate::harness::JOURNAL,
            Journal::Postgres { url, .. } => url,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Journal::Sqlite)
    }

    /// A scratch folder whose `orchestrate` commands can reach this journal.
    pub fn scratch(&self) -> Scratch {
        let scratch = Scratch::new();
        if let Journal::Postgres { .. } = self {
            scratch.set_env("PGPASSFILE", &server().passfile.display().to_string());
        }
        scratch
    }

    /// Every byte the journal holds, to look for what must not be there.
    pub fn contents(&self, scratch: &Scratch) -> String {
        match self {
            Journal::Sqlite => {
                let read = |name: &str| {
                    String::from_utf8_lossy(
                        &std::fs::read(scratch.path().join(name)).unwrap_or_default(),
                    )
                    .into_owned()
                };
                read(crate::harness::JOURNAL) + &read(".orchestrate/state.db-wal")
            }
            Journal::Postgres { db, .. } => server().dump(db),
        }
    }
}

/// Each named test body (`fn name(journal: &Journal)`) as two tests,
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_journals {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&$crate::journals::Journal::sqlite())
                }
                #[test]
                fn postgres() {
                    super::$name(&$crate::journals::Journal::postgres())
                }
            }
        )*
    };
}
