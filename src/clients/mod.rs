//! Typed clients for the outside APIs. They know nothing of tasks.

pub mod http;
pub mod postgres;
pub mod railway;
