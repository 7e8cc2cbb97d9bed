//! One test binary (as just does) keeps link time down.

mod support;

mod bench;
mod config_errors;
mod deploy;
mod extract;
mod operator;
mod reliability;
mod replication;
mod runner;
mod schedules;
mod soak;
mod supervisor;
mod supervisor_health;
