//! Integration tests of the auth service against real PostgreSQL and Redis
//! (started by `scripts/test`, or the servers named in `KEEL_TEST_*`).

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod admin;
mod helpers;
mod input;
mod keys;
mod readiness;
mod refresh;
mod sessions;
mod throttle;
