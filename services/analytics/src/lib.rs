//! The analytics service: every domain event kept raw, rolled up as it
//! arrives, queried from the rollups.
//!
//! # Layout
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`schema`]: the `analytics` tables (raw events partitioned by day,
//!   rollups, distinct users per day) and partition functions.
//! - [`ingest`]: the batch consumer's handler, rollup arithmetic, `rebuild`,
//!   partition maintenance, ingestion metrics.
//! - [`query`]: `GET /api/v1/analytics/summary` and `/timeseries`.
//! - [`export`]: `export-raw`, raw events as NDJSON per day for a warehouse.
//! - [`startup`]: [`startup::Application`] wires the pool, the broker, the
//!   consumer, the maintenance task and the HTTP server.

pub mod export;
pub mod ingest;
pub mod query;
pub mod schema;
pub mod settings;
pub mod startup;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "analytics";
/// The PostgreSQL schema the analytics service owns.
pub const SCHEMA: &str = "analytics";
