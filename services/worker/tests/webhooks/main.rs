//! The webhook handler of `jobs.webhook` against real PostgreSQL and
//! RabbitMQ, with a fake Shopify Admin API served over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod competing;
mod crashes;
mod handling;
mod retries;
mod rules;
mod support;
