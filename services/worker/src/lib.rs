//! The worker: drains the job queues.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires the pool, the broker, the
//!   job consumers, the outbox relay (the worker emits domain events
//!   through the `store` outbox) and the operational HTTP endpoints.
//! - [`webhooks`]: the `jobs.webhook` handler — captured webhooks applied
//!   to orders (Shopify, Stripe), the rest marked `ignored`.
//! - [`exports`]: the `jobs.export` handler — export files streamed out of
//!   PostgreSQL into object storage — and the retention sweep.
//! - [`queue_depth`]: sampled queue depths for `/metrics`.
//!
//! The worker serves no public API: its port exposes `/healthz`, `/readyz`
//! and `/metrics` only.

pub mod exports;
pub mod queue_depth;
pub mod settings;
pub mod startup;
pub mod webhooks;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "worker";
/// The worker applies webhooks to orders and builds exports: it works in
/// the `store` schema it shares with the gateway.
pub const SCHEMA: &str = "store";
