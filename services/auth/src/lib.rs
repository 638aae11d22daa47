//! The auth service: Keel's identity provider.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires the pool, Redis, the
//!   broker, the outbox relay and the HTTP server.
//!
//! Accounts, tokens and sessions arrive with their own issue; this crate
//! already runs, migrates its schema, publishes through its outbox and
//! reports readiness.

pub mod settings;
pub mod startup;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "auth";
/// The PostgreSQL schema the auth service owns.
pub const SCHEMA: &str = "auth";
