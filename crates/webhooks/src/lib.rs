//! Inbound webhooks, the part shared by the gateway (which captures them)
//! and the worker (which applies them). No HTTP framework here: the gateway
//! maps [`Rejection`] and [`Error`] onto its own answers.
//!
//! # Layout
//! - [`admin`]: the admin API's queries — [`admin::list`] (newest first,
//!   keyset pages, by status and source), [`admin::get`] (headers and raw
//!   body), [`admin::replay`] (back to `received` + a new job, one
//!   transaction).
//! - [`scheme`]: [`Scheme`] and [`Verifier`] — the four signature schemes
//!   (`shopify`, `github`, `stripe`, `standard`), verified over the raw body
//!   in constant time with every active secret, and the delivery id and
//!   topic each scheme carries, one file per scheme (`scheme/shopify.rs`,
//!   ...) over what they share (`scheme/mod.rs`). [`Rejection`] names the
//!   check that failed.
//! - [`headers`]: the [`Headers`] lookup the verifier reads, and the
//!   selection of headers stored with an event (signatures redacted) by
//!   the [`headers::HeaderRules`] each scheme declares. It sits below
//!   `scheme` and imports nothing from it.
//! - [`schema`]: the `webhook_events` table ([`MIGRATIONS`], component
//!   `webhooks`, in the `store` schema next to the outbox).
//! - [`capture`]: [`capture::capture`] — the event row, its
//!   `webhook.process` job and its `webhook.received` event in one
//!   transaction; a redelivery stores nothing and names the first event.
//! - [`group_commit`]: [`group_commit::GroupCommit`] — the captures that
//!   arrive while a commit is in flight, stored together in one statement
//!   ([`capture::capture_many`]); each caller answered after its commit.
//! - [`process`]: the worker's side of an event — [`process::load`],
//!   [`process::lock`] (row lock with a lock timeout), [`process::finish`]
//!   (`processed` / `ignored`), [`process::record_failure`] (attempts, last
//!   error, `failed`).
//! - [`sign`]: the sender's side of each scheme, for tests, benchmarks and
//!   tools.
//! - [`error`]: the crate's [`Error`].
//!
//! Design and trade-offs: `docs/adr/0011-inbound-webhooks.md`.

pub mod admin;
pub mod capture;
pub mod error;
pub mod group_commit;
pub mod headers;
pub mod process;
pub mod schema;
pub mod scheme;
pub mod sign;

pub use capture::{Captured, NewEvent, PreparedCapture, capture};
pub use error::{Error, Result};
pub use headers::Headers;
pub use schema::MIGRATIONS;
pub use scheme::{Rejection, Scheme, SecretError, Verified, Verifier};
