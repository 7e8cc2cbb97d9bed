//! One test binary (as just does) keeps link time down.

mod support;

mod alerts;
mod architecture;
mod bench;
mod config_errors;
mod conventions;
mod deploy;
mod disk;
mod do_openapi;
mod doks;
mod drain;
mod extract;
mod hardening;
mod hardening3;
mod hardening4;
mod healing;
mod image;
mod kubernetes;
mod kubernetes_contract;
mod monitoring;
mod operator;
mod ownership;
mod railway_schema;
mod release;
mod reliability;
mod replication;
mod runner;
mod runs_flow;
mod scale;
mod schedules;
mod simulate;
mod soak;
mod supervisor;
mod supervisor_health;
mod trust;
