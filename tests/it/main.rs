//! The integration tests: one binary, a module per feature.
//!
//! Every module here runs the real `orchestrate` binary or the library
//! against real peers (OpenSSH `sshd`, the WinRM test endpoint, SQLite,
//! headless Chromium). They live in one test binary rather than one per file
//! because each binary links russh, tera and tree-sitter: on two cores the
//! links, not the compiles, dominated the build.
//!
//! Shared helpers: `harness` (scratch folders, running the binary,
//! signals), `journals` (each journal test on SQLite and on PostgreSQL),
//! `support` (the sshd fleet, the PostgreSQL server), `linux_lab` (Linux playbook hosts),
//! `windows_fleet` (the WinRM endpoint fleet), `report_fixture`.

mod harness;
mod journals;
mod linux_lab;
mod report_fixture;
mod support;
mod windows_fleet;

mod bad_input;
mod baseline;
mod become_sudo;
mod bounded_memory;
mod command_lines;
mod dry_run;
mod faults;
mod golden_plans;
mod host_outcomes;
mod includes;
mod journal_resume;
mod leases;
mod linux_clamav;
mod linux_playbooks;
mod linux_playbooks_plan;
mod macos_kav_export;
mod outputs;
mod postgres_workers;
mod reboot_logged_on;
mod reboot_policy;
mod rehearse;
mod report_render;
mod runner;
mod schema;
mod secrets;
mod shared_uploads;
mod signals;
mod ssh_runs;
mod ssh_transport;
mod terminal_escapes;
mod timeouts;
mod wave_order;
mod windows_kaspersky_removal;
mod windows_outcomes;
mod windows_playbook_flow;
mod windows_playbook_plan;
mod windows_protection_checks;
mod windows_sensors;
mod winrm_transport;
