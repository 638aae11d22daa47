//! Dead letters made durable, listable and requeueable.
//!
//! Messages no consumer could handle end in the quorum queue `{ns}.dead`
//! (`keel_messaging`'s consumer runner puts them there with
//! `x-keel-death-reason`, `x-keel-last-error`, ...). A queue can only be
//! read by consuming it, so the worker's [`Archiver`] drains it into the
//! `dead_letters` table, where admins list them and requeue one by id.
//!
//! # Layout
//! - [`schema`]: the `dead_letters` table ([`MIGRATIONS`], component
//!   `dead_letters`, in the `store` schema next to the outbox).
//! - [`letter`]: [`NewDeadLetter`], a dead message read from its AMQP
//!   properties (id, type, original routing key, death headers as columns,
//!   every header as JSON, the body byte for byte).
//! - [`archive`]: [`archive::archive`] — one row per message id; a requeued
//!   message that dies again brings its row back to `dead`.
//! - [`archiver`]: [`Archiver`], the loop that consumes `{ns}.dead` and acks
//!   after commit, holding a message (not requeueing it) while the database
//!   is unreachable.
//! - [`queries`]: [`queries::list`] (newest first, keyset pages) and
//!   [`queries::get`].
//! - [`requeue`]: [`requeue::requeue`] — mark `requeued` and enqueue the
//!   job again in a new envelope through the outbox, in one transaction.
//! - [`metrics`]: the archiver's counters.
//! - [`error`]: the crate's [`Error`].
//!
//! Design and trade-offs: `docs/adr/0017-dead-letter-archive.md`.

pub mod archive;
pub mod archiver;
pub mod error;
pub mod letter;
pub mod metrics;
pub mod queries;
pub mod requeue;
pub mod schema;

pub use archive::Archived;
pub use archiver::Archiver;
pub use error::{Error, Result};
pub use letter::NewDeadLetter;
pub use metrics::ArchiverMetrics;
pub use queries::{DeadLetter, ListQuery, Status, StoredDeadLetter};
pub use requeue::Requeued;
pub use schema::MIGRATIONS;
