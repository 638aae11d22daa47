//! The worker: drains the job queues.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires the pool, the broker, the
//!   outbox relay (the worker emits domain events through the `store`
//!   outbox) and the operational HTTP endpoints.
//!
//! The worker serves no public API: its port exposes `/healthz`, `/readyz`
//! and `/metrics` only. Job handlers (webhooks, exports) arrive with their
//! issues; the topology they consume from is declared here already.

pub mod settings;
pub mod startup;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "worker";
/// The worker applies webhooks to orders and builds exports: it works in
/// the `store` schema it shares with the gateway.
pub const SCHEMA: &str = "store";
