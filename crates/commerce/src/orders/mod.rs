//! The orders domain, shared by the gateway (which serves it) and the
//! worker (which applies webhooks to it). Laid out as [`crate::exports`] is.
//!
//! # Layout
//! - [`domain`]: validated newtypes with `parse()` ([`domain::Currency`],
//!   [`domain::Sku`], ...), [`domain::OrderStatus`] and its state machine,
//!   [`domain::NewOrder`] and [`domain::Order`] (the API's JSON shape).
//! - [`schema`]: the `orders`, `order_items` and `idempotency_keys` tables
//!   ([`MIGRATIONS`], component `store`: the name existing databases
//!   recorded their migrations under, so it outlives the crate's old name).
//! - [`queries`]: create, get, list, cancel and status changes, and the
//!   webhook writes (`upsert_external`, `mark_paid`, `record_fulfillment`).
//!   Every change writes its domain event to the outbox in the same
//!   transaction.
//! - [`idempotency`]: `Idempotency-Key` records: [`idempotency::begin`]
//!   says what to do next (proceed, replay, refuse); `complete` stores the
//!   response.
//! - [`error`]: the module's [`Error`].

pub mod batch;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod queries;
pub mod schema;

pub use error::{Error, Result};
pub use queries::*;
pub use schema::MIGRATIONS;
