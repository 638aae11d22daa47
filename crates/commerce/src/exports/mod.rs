//! The exports domain, shared by the gateway (which accepts and serves
//! exports) and the worker (which builds their files). No HTTP and no
//! object storage here: callers map [`Error`] onto their own answers.
//!
//! # Layout
//! - [`domain`]: [`Export`] (the API's JSON shape, without `download_url`),
//!   [`ExportStatus`] and its state machine, [`NewExport::parse`] with
//!   errors naming the field.
//! - [`schema`]: the `exports` table ([`MIGRATIONS`], component `exports`).
//! - [`queries`]: create (row + `export.run` job, bounded per user), get,
//!   list, start / progress / succeed / fail (final status + its event in
//!   one transaction), retention, and [`finished_since`] for SSE resume.
//! - [`leases`]: a builder's lease on an export (acquire, renew, fenced
//!   succeed / fail / progress) and the sweeper's queries (ADR 0025).
//! - [`rows`]: the `COPY (SELECT ...) TO STDOUT` statement whose output is
//!   the file.
//! - [`error`]: the module's [`Error`].

pub mod domain;
pub mod error;
pub mod leases;
pub mod queries;
pub mod rows;
pub mod schema;

pub use domain::{
    Compression, Export, ExportFilter, ExportStatus, Format, NewExport, RawExportFilter,
    RawNewExport, Resource,
};
pub use error::{Error, Result};
pub use leases::{Acquired, Lease};
pub use queries::{
    Start, Written, create, expiring, fail, finished_since, get, list, mark_expired, progress,
    start, succeed,
};
pub use schema::MIGRATIONS;
