//! The orders (and, later, exports) domain, shared by the gateway (which
//! serves it) and the worker (which applies webhooks to it). No HTTP here:
//! callers map [`Error`] onto their own answers.
//!
//! # Layout
//! - [`domain`]: validated newtypes with `parse()` ([`domain::Currency`],
//!   [`domain::Sku`], ...), [`domain::OrderStatus`] and its state machine,
//!   [`domain::NewOrder`] and [`domain::Order`] (the API's JSON shape).
//! - [`schema`]: the `orders`, `order_items` and `idempotency_keys` tables
//!   ([`MIGRATIONS`], component `store`).
//! - [`orders`]: queries. Every change writes its domain event to the outbox
//!   in the same transaction.
//! - [`idempotency`]: `Idempotency-Key` records: [`idempotency::begin`]
//!   says what to do next (proceed, replay, refuse); `complete` stores the
//!   response.
//! - [`exports`]: the exports domain (types, state machine, its own
//!   migration set `exports::MIGRATIONS`, queries, the `COPY` statement of
//!   a file), with its own `exports::Error`.
//! - [`error`]: the crate's [`Error`].

pub mod domain;
pub mod error;
pub mod exports;
pub mod idempotency;
pub mod orders;
pub mod schema;

pub use error::{Error, Result};
pub use schema::MIGRATIONS;
