use std::time::Duration;

use keel_config::{Invalid, Validate};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The `redis` section of a service's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`.
    pub url: SecretString,
    /// Prepended to every key.
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Upper bound on one command, so a stalled Redis cannot hang a request.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl Validate for RedisSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if redis::Client::open(self.url.expose_secret()).is_err() {
            return Err(Invalid::new("url", "is not a valid Redis URL").within("redis"));
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(
                Invalid::new("response_timeout", "timeouts must be greater than zero")
                    .within("redis"),
            );
        }
        Ok(())
    }
}
