//! The end-to-end harness: Keel's service binaries started as separate
//! processes (the way operators run them) against the real PostgreSQL,
//! Redis and RabbitMQ servers of the test run, each run with its own
//! database, Redis key prefix and AMQP namespace, so the scenarios run in
//! parallel with every other test.
//!
//! The binaries are the ones `cargo nextest run --workspace` (or
//! `cargo build --workspace --bins`) built next to the test executable.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test harness: failing loudly is the point

pub mod process;
pub mod stack;

pub use process::{Process, Service};
pub use stack::{Backing, Stack};
