//! The transactional outbox (publish exactly what was committed, even when
//! the broker is down) and the inbox (apply each message once, even when it
//! is delivered twice).
//!
//! # Layout
//! - [`schema`]: the `outbox` and `inbox` tables ([`MIGRATIONS`]).
//! - [`enqueue`]: [`enqueue_job`] / [`enqueue_event`], called inside the
//!   caller's transaction, so the message commits with the state change.
//! - [`relay`]: [`Relay`], which publishes committed rows with publisher
//!   confirms and marks them published; parks a row the broker keeps
//!   refusing ([`parked`], [`unpark`]); prunes and measures on tasks of its
//!   own.
//! - [`wake`]: [`RelayWaker`], coalesced wake-ups after commits whose rows
//!   carry no NOTIFY (hot write paths: webhook capture, the worker).
//! - [`inbox`]: [`inbox::claim`], de-duplication for consumers.
//! - [`metrics`]: the relay's Prometheus metrics.
//! - [`error`]: the crate's [`Error`].
//!
//! Guarantee: every committed row is published at least once; a relay that
//! dies between the broker's confirm and its own commit publishes the row
//! again, so consumers de-duplicate on the message id with the inbox.

pub mod enqueue;
pub mod error;
pub mod inbox;
pub mod metrics;
pub mod relay;
pub mod schema;
pub mod wake;

pub use enqueue::{OutboxRow, enqueue_event, enqueue_job, wake_relays};
pub use error::{Error, Result};
pub use metrics::RelayMetrics;
pub use relay::{Backlog, ParkedRow, Relay, RelayOptions, parked, unpark};
pub use schema::MIGRATIONS;
pub use wake::RelayWaker;
