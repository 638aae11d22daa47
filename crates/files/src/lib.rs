//! Object storage for files the services produce and serve (export files):
//! one [`Storage`] over a local directory or any S3-compatible store, built
//! on the Apache Arrow `object_store` crate (ADR 0012).
//!
//! # Layout
//! - [`settings`]: the `storage` configuration section ([`StorageSettings`]):
//!   `backend = "local"` with a `root` directory, or `backend = "s3"` with
//!   bucket, region, optional endpoint (MinIO, Ceph, R2...) and credentials.
//! - [`storage`]: [`Storage`] — [`Storage::writer`] (streaming: one PUT for
//!   small objects, a multipart upload past a few MiB; the object appears
//!   only when [`ObjectWriter::finish`] succeeds), [`Storage::open`]
//!   (streaming read with the size known up front), [`Storage::delete`],
//!   [`Storage::list`] and [`Storage::remove_stale_staging`] (what the
//!   export sweeper uses to find orphaned files and killed uploads).
//! - [`error`]: the crate's [`Error`].

pub mod error;
pub mod settings;
pub mod storage;

pub use error::{Error, Result};
pub use settings::{Backend, S3Settings, StorageSettings};
pub use storage::{Download, ObjectInfo, ObjectWriter, Storage};
