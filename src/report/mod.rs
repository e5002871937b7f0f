//! Report: everything that draws a plan or a run for people and machines.
//!
//! Reporters only render; they never decide. The plan renderers take a
//! finished [`crate::plan::Plan`]; the run reporters are observers of the
//! runner's events ([`crate::run::Event`]). A finished run's [`run_json::Report`]
//! is also drawn as [`html`] (for the MSP's client) and [`junit`] (for CI);
//! [`text`] holds what those two share; [`terminal`] makes untrusted text
//! inert for every human reporter.

pub mod baseline;
pub mod html;
pub mod junit;
pub mod lines;
pub mod log;
pub mod plan_json;
pub mod plan_text;
pub mod progress;
pub mod run_json;
pub mod summary;
pub mod terminal;
pub mod text;
