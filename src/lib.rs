//! orchestrate: staged, journaled migrations of endpoint-security products
//! across client fleets.
//!
//! The modules follow the data, as the README's "How the code is laid
//! out" draws it:
//! [`load`] reads playbooks and inventories → [`plan`] turns them into
//! clients, waves, hosts and rendered steps (pure, no I/O) → [`run`] executes
//! a plan over a [`transport`] and emits events → [`report`] renders plans
//! and events for people and machines. [`cli`] wires them to the command line.

// Input errors carry their source snippet for miette; they are made once
// per problem and never on a hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod journal;
pub mod load;
pub mod owner_only;
pub mod plan;
pub mod quote;
pub mod rehearse;
pub mod report;
pub mod run;
pub mod transport;
