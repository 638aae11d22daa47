//! The analytics service: raw domain events and rollups.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires the pool, the broker and the
//!   HTTP server.
//!
//! Event ingestion and the query API arrive with their issue; this crate
//! already runs, migrates its schema and reports readiness.

pub mod settings;
pub mod startup;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "analytics";
/// The PostgreSQL schema the analytics service owns.
pub const SCHEMA: &str = "analytics";
