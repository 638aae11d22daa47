//! The API gateway: Keel's public HTTP edge.
//!
//! # Layout
//! - [`identity`]: [`identity::Caller`], the authenticated caller handlers
//!   extract (set by the authentication middleware).
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires pools, the broker, the
//!   outbox relay and the HTTP server; [`startup::build_app`] is the one app
//!   factory used by the server and the tests.
//!
//! `main.rs` only parses the command line and calls into here, so tests
//! start the real application in-process on port 0.

pub mod identity;
pub mod settings;
pub mod startup;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "api-gateway";
/// The PostgreSQL schema the gateway owns (orders, exports, webhooks, outbox).
pub const SCHEMA: &str = "store";
