//! Report: everything that draws a plan or a run for people and machines.
//!
//! Reporters only render; they never decide. The plan renderers take a
//! finished [`crate::plan::Plan`]; the run reporters are observers of the
//! runner's events ([`crate::run::Event`]).

pub mod lines;
pub mod log;
pub mod plan_json;
pub mod plan_text;
pub mod progress;
pub mod run_json;
pub mod summary;
