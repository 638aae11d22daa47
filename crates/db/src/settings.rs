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
    /// runaway query. (A server that is alive enforces it; a link that
    /// died is the kernel's to notice, through `tcp` below.)
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Kernel-level deadlines on every connection's socket, so a link that
    /// silently drops packets fails the query instead of hanging it for
    /// the kernel's default ~15 minutes of retransmissions.
    #[serde(default)]
    pub tcp: TcpDeadlines,
    /// PostgreSQL's JIT compilation of expressions. Off unless asked for:
    /// Keel's statements are short, and JIT only ever added its compile
    /// time to them — the analytics summary spent 45 ms compiling a 0.5 ms
    /// read once an estimate crossed `jit_above_cost` (ADR 0016).
    #[serde(default)]
    pub jit: bool,
}

/// `[database.tcp]`: TCP keepalives and `TCP_USER_TIMEOUT` on each
/// PostgreSQL connection (the pool's and the relay's `LISTEN` session).
///
/// `user_timeout` bounds how long sent data may stay unacknowledged (or
/// unsendable, the peer's window closed) before the kernel aborts the
/// connection: a query on a dead link fails within it. Keepalives probe an
/// idle connection (pooled, or waiting on a long statement) so a dead
/// link is found before the next query meets it; with `user_timeout` set,
/// the kernel gives up on unanswered probes after `user_timeout` too.
/// Neither fires while the server is alive and merely busy: its kernel
/// acknowledges, so long statements (exports, rebuilds) are unaffected.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct TcpDeadlines {
    #[serde(with = "humantime_serde")]
    pub user_timeout: Duration,
    /// Idle time before the first keepalive probe.
    #[serde(with = "humantime_serde")]
    pub keepalive_idle: Duration,
    /// Time between unanswered probes.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub keepalive_retries: u32,
}

impl Default for TcpDeadlines {
    fn default() -> Self {
        Self {
            user_timeout: Duration::from_secs(30),
            keepalive_idle: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            keepalive_retries: 3,
        }
    }
}

impl TcpDeadlines {
    fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("user_timeout", self.user_timeout),
            ("keepalive_idle", self.keepalive_idle),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            // Whole seconds for keepalives (the socket option's unit), and
            // zero would turn the deadline off, which is what this fixes.
            if value < Duration::from_secs(1) {
                return Err(Invalid::new(key, "must be at least 1s").within("database.tcp"));
            }
        }
        if self.keepalive_retries == 0 {
            return Err(
                Invalid::new("keepalive_retries", "must be at least 1").within("database.tcp")
            );
        }
        Ok(())
    }
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
        self.tcp.validate()
    }
}
