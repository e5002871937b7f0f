//! Load: read playbooks and inventories from YAML into checked models.
//!
//! Loading does no I/O beyond reading the files, and every problem it finds
//! names the file, line and column (see [`diagnostic`]). All problems of a
//! file are collected before giving up, so one run shows every typo.

pub mod baseline;
mod convert;
pub mod diagnostic;
mod include;
pub mod inventory;
pub mod must_reach;
pub mod playbook;
mod playbook_doc;
pub mod reboot;
pub mod schema;
pub mod step_values;
pub mod values;

pub use baseline::{Expect, OnRegression, Pattern, Probe, ProbeFormat};
pub use diagnostic::{InputError, InputErrors, SourceFile};
pub use inventory::{Client, Connection, Host, Inventory, load_inventory, parse_inventory};
pub use playbook::{
    Action, Capture, CaptureFormat, Mark, Phase, Place, Playbook, Step, Template, Vars,
    load_playbook, parse_playbook,
};
pub use reboot::{RebootPolicy, RebootWindow, RebootWithUsers, WindowState};
pub use values::{HumanDuration, Pause, Size};

/// Parses YAML into `T`, turning any error into one that points into the file.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    source: &SourceFile,
) -> Result<T, InputError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options::<T>(&source.text, options)
        .map_err(|e| source.yaml_error(&e))
}
