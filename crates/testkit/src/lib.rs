//! Test harness: isolated, parallel-safe access to the real PostgreSQL,
//! Redis and RabbitMQ servers that `scripts/test` starts.
//!
//! # Layout
//! - [`env`]: where the test servers are (`KEEL_TEST_*` variables).
//! - [`database`]: a fresh database per test, cloned from a migrated template.
//! - [`broker`]: a unique AMQP namespace per test, deleted afterwards.
//! - [`process`]: a service binary run as a separate process, stopped by
//!   SIGTERM.
//! - [`proxy`]: a TCP proxy that can cut and restore a connection to a real
//!   server, to simulate an outage without disturbing parallel tests.
//! - [`redis`]: a unique Redis key prefix per test.

// A broken test environment should fail the test at once and loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: setup failures must abort the test"
)]

pub mod broker;
pub mod database;
pub mod env;
pub mod process;
pub mod proxy;
pub mod redis;
