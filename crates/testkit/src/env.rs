//! Where the throwaway servers started by `scripts/test` listen.
//!
//! Tests fail loudly when a variable is missing rather than skipping: a test
//! that silently does nothing would pass without proving anything.

fn require(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test, which starts the servers")
    })
}

/// Superuser URL of the `postgres` maintenance database.
pub fn database_url() -> String {
    require("KEEL_TEST_DATABASE_URL")
}

pub fn redis_url() -> String {
    require("KEEL_TEST_REDIS_URL")
}

pub fn amqp_url() -> String {
    require("KEEL_TEST_AMQP_URL")
}

pub fn amqp_management_url() -> String {
    require("KEEL_TEST_AMQP_MANAGEMENT_URL")
}
