//! Integration tests of the gateway against real PostgreSQL, Redis and
//! RabbitMQ (started by `scripts/test`).

// Helpers outside #[test] functions are test code too: a broken setup
// should abort the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_outbox;
mod auth;
mod auth_support;
mod cache;
mod cors;
mod database_deadlines;
mod deadlines;
mod edge;
mod events;
mod exports;
mod helpers;
mod idempotency;
mod openapi;
mod operational;
mod orders;
mod orders_e2e;
mod orders_support;
mod path_spelling;
mod process;
mod proxy;
mod rate_limit;
mod readiness;
mod store_timeouts;
mod webhook_orders;
mod webhooks;
mod webhooks_settings;
mod webhooks_support;
