//! Export files built by the worker against real PostgreSQL, RabbitMQ and a
//! real directory: content against direct SQL, filters, gzip, a worker
//! killed mid-file, failures, retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod content;
mod crash;
mod failure;
mod injection;
mod leases;
mod retention;
mod support;
