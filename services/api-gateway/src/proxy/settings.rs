use std::time::Duration;

use keel_config::{Invalid, Validate};
use serde::Deserialize;

/// The `upstreams` section: the services the gateway proxies to.
#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamSettings {
    /// The auth service (also where the JWK Set is fetched from).
    pub auth_url: url::Url,
    pub analytics_url: url::Url,
    /// Budget for opening a TCP connection to an upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Budget for a whole upstream exchange, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per upstream.
    pub pool_max_idle: usize,
}

impl UpstreamSettings {
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_max_idle_per_host(self.pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            // Upstream redirects are the client's business, not ours.
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }
}

impl Validate for UpstreamSettings {
    fn validate(&self) -> Result<(), Invalid> {
        for (key, url) in [
            ("auth_url", &self.auth_url),
            ("analytics_url", &self.analytics_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(Invalid::new(key, "must be an http(s) URL").within("upstreams"));
            }
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(
                Invalid::new("request_timeout", "timeouts must be greater than zero")
                    .within("upstreams"),
            );
        }
        if self.connect_timeout > self.request_timeout {
            return Err(
                Invalid::new("connect_timeout", "must not exceed request_timeout")
                    .within("upstreams"),
            );
        }
        Ok(())
    }
}
