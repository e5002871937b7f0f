//! JSON Schemas (draft 2020-12) of the files `orchestrate` reads, for
//! editors (yaml-language-server completes and checks keys as one types)
//! and for tools that check playbooks before a run.
//!
//! Each schema is derived (schemars) from the very `*Doc` types the loader
//! deserializes, so it cannot drift from what is accepted: a key added to a
//! type is in the schema. What the loader checks beyond types (a step has
//! exactly one action; an include has only `vars` beside it; durations and
//! shares) is written beside those types, as schema transforms and value
//! type impls. `docs/schema/` holds the output, kept current by a test.

use schemars::generate::SchemaSettings;

use super::baseline::ProbeDoc;
use super::inventory::InventoryDoc;
use super::playbook_doc::{PhaseDoc, PlaybookDoc, StepDoc};

/// The formats with a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// A playbook (`playbooks/*.yml`).
    Playbook,
    /// An inventory.
    Inventory,
    /// A file of steps, for `include:` in `steps:`, `on_failure:` or `rollback:`.
    Steps,
    /// A file of phases, for `include:` in `phases:`.
    Phases,
    /// A file of baseline probes, for `include:` in `baseline:`.
    Probes,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 5] = [
        SchemaKind::Playbook,
        SchemaKind::Inventory,
        SchemaKind::Steps,
        SchemaKind::Phases,
        SchemaKind::Probes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchemaKind::Playbook => "playbook",
            SchemaKind::Inventory => "inventory",
            SchemaKind::Steps => "steps",
            SchemaKind::Phases => "phases",
            SchemaKind::Probes => "probes",
        }
    }
}

/// The schema of `kind`, as JSON.
pub fn schema(kind: SchemaKind) -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = match kind {
        SchemaKind::Playbook => generator.into_root_schema_for::<PlaybookDoc>(),
        SchemaKind::Inventory => generator.into_root_schema_for::<InventoryDoc>(),
        SchemaKind::Steps => generator.into_root_schema_for::<Vec<StepDoc>>(),
        SchemaKind::Phases => generator.into_root_schema_for::<Vec<PhaseDoc>>(),
        SchemaKind::Probes => generator.into_root_schema_for::<Vec<ProbeDoc>>(),
    };
    let title = match kind {
        SchemaKind::Playbook => "orchestrate playbook",
        SchemaKind::Inventory => "orchestrate inventory",
        SchemaKind::Steps => "orchestrate steps file (include: in steps, on_failure, rollback)",
        SchemaKind::Phases => "orchestrate phases file (include: in phases)",
        SchemaKind::Probes => "orchestrate probes file (include: in baseline)",
    };
    schema.insert("title".into(), title.into());
    schema.to_value()
}
