//! Integration tests of the gateway against real PostgreSQL, Redis and
//! RabbitMQ (started by `scripts/test`).

mod helpers;
mod operational;
mod process;
mod readiness;
