//! Typed clients for the outside APIs. They know nothing of tasks.

pub mod digitalocean;
pub mod doks;
pub mod http;
pub mod kubernetes;
pub mod postgres;
pub mod railway;
pub mod webapp_db;
