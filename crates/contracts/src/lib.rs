//! Wire contracts: the serde types of every message that crosses a service
//! boundary on the bus.
//!
//! # Layout
//! - [`envelope`]: the envelope every message travels in (`id`, `type`,
//!   `version`, `occurred_at`, `data`).
//! - [`jobs`]: work items published to the `jobs` exchange and drained by the worker.
//! - [`events`]: domain facts published to the `events` topic exchange.
//! - [`schema`]: JSON Schema generation for `proto/schemas/`.
//!
//! This crate must stay light: serde, uuid, chrono and schemars only. It is
//! compiled into every service, so it never pulls in actix, lapin or a
//! database driver (a test in `tests/dependencies.rs` enforces that).

pub mod envelope;
pub mod events;
pub mod jobs;
pub mod schema;

pub use envelope::{Envelope, MessageBody};
pub use events::DomainEvent;
pub use jobs::Job;
