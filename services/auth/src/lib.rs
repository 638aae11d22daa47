//! The auth service: Keel's identity provider.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires the pool, Redis, the
//!   broker, the outbox relay, the signing keys and the HTTP server.
//! - [`routes`]: thin handlers for API.md's auth section and the JWKS.
//! - [`domain`]: validated inputs (`Email`, `DisplayName`, `NewPassword`
//!   with the password policy and the shipped common-password list).
//! - [`passwords`]: argon2id off the async runtime, bounded; bcrypt legacy.
//! - [`keys`]: signing keys from PEM (env/file) or a development key.
//! - [`sessions`]: sessions and rotating refresh tokens in Redis (one Lua
//!   script; grace period; reuse detection).
//! - [`throttle`]: failed-login counters per email and per IP.
//! - [`users`]: accounts in PostgreSQL, events through the outbox.
//! - [`caller`]: the Bearer-authenticated caller extractor.
//! - [`error`]: the API error enum → problem+json.
//! - [`admin`]: `create-admin` and the bootstrap admin.

pub mod admin;
pub mod caller;
pub mod domain;
pub mod error;
pub mod keys;
pub mod passwords;
pub mod routes;
pub mod schema;
pub mod sessions;
pub mod settings;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod users;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "auth";
/// The PostgreSQL schema the auth service owns.
pub const SCHEMA: &str = "auth";
