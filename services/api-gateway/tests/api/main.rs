//! Integration tests of the gateway against real PostgreSQL, Redis and
//! RabbitMQ (started by `scripts/test`).

// Helpers outside #[test] functions are test code too: a broken setup
// should abort the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod operational;
mod process;
mod readiness;
