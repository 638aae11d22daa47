use std::time::Duration;

use keel_config::{Invalid, Validate};
use secrecy::SecretString;
use serde::Deserialize;

/// The `database` section of a service's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; secret because it may
    /// carry a password.
    pub url: SecretString,
    /// Upper bound on pooled connections per process.
    pub max_connections: usize,
    /// How long a request waits for a free connection before failing with
    /// "unavailable" (503) instead of queueing forever.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// TCP connect timeout for a new connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Server-side cap on any one statement; protects the pool from a
    /// runaway query.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// PostgreSQL's JIT compilation of expressions. Off unless asked for:
    /// Keel's statements are short, and JIT only ever added its compile
    /// time to them — the analytics summary spent 45 ms compiling a 0.5 ms
    /// read once an estimate crossed `jit_above_cost` (ADR 0016).
    #[serde(default)]
    pub jit: bool,
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), Invalid> {
        use secrecy::ExposeSecret;
        let url = self.url.expose_secret();
        if url.parse::<tokio_postgres::Config>().is_err() {
            // Never echo the URL: it may contain a password.
            return Err(Invalid::new("url", "is not a valid PostgreSQL URL").within("database"));
        }
        if !(1..=1000).contains(&self.max_connections) {
            return Err(
                Invalid::new("max_connections", "must be between 1 and 1000").within("database"),
            );
        }
        for (key, value) in [
            ("acquire_timeout", self.acquire_timeout),
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(Invalid::new(key, "must be greater than zero").within("database"));
            }
        }
        Ok(())
    }
}
