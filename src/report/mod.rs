//! Report: everything that draws a plan or a run for people and machines.
//!
//! Reporters only render; they never decide. The plan renderers take a
//! finished [`crate::plan::Plan`]; the run reporters consume the runner's
//! events.

pub mod plan_json;
pub mod plan_text;
