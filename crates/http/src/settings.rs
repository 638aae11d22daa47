use std::time::Duration;

use keel_config::{Invalid, Validate};
use serde::Deserialize;

/// The `http` section of a service's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// actix worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long a request body may take to arrive after its head (408 and
    /// the connection closed beyond; see `body_deadline`).
    #[serde(with = "humantime_serde", default = "default_body_read_timeout")]
    pub body_read_timeout: Duration,
    /// How long a request may take from its head to its response head
    /// (503 with `Retry-After` beyond; see `request_deadline`). Streamed
    /// bodies (SSE, downloads) are not bounded by it.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// How long in-flight requests may run after shutdown starts.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Budget for each dependency check in `/readyz`.
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
    /// How long the service's runtime may go without running its liveness
    /// heartbeat (a task ticking every second) before `/healthz` answers
    /// 503: every worker thread blocked, or a task that never yields.
    #[serde(with = "humantime_serde", default = "default_liveness_stall_after")]
    pub liveness_stall_after: Duration,
    /// Peers whose `X-Forwarded-For` entries are believed (the gateway, an
    /// ingress). Empty: every request is attributed to its TCP peer.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_liveness_stall_after() -> Duration {
    Duration::from_secs(10)
}

impl HttpSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Validate for HttpSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(Invalid::new("host", "must be an IP address or localhost").within("http"));
        }
        if !(1..=512 * 1024 * 1024).contains(&self.body_limit) {
            return Err(
                Invalid::new("body_limit", "must be between 1 byte and 512 MiB").within("http"),
            );
        }
        if self.body_read_timeout.is_zero() {
            return Err(
                Invalid::new("body_read_timeout", "must be greater than zero").within("http"),
            );
        }
        // Below two heartbeat periods, a busy but healthy runtime would
        // look wedged.
        if self.liveness_stall_after < Duration::from_secs(2) {
            return Err(Invalid::new("liveness_stall_after", "must be at least 2s").within("http"));
        }
        // A body may take body_read_timeout to arrive: its answer must be
        // that deadline's 408, not this one's 503.
        if self.request_timeout < self.body_read_timeout {
            return Err(Invalid::new(
                "request_timeout",
                "must be at least body_read_timeout (a slow body gets its 408 first)",
            )
            .within("http"));
        }
        if self.readiness_timeout.is_zero() {
            return Err(
                Invalid::new("readiness_timeout", "must be greater than zero").within("http"),
            );
        }
        Ok(())
    }
}
