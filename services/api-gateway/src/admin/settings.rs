//! The `[amqp_management]` section: where the RabbitMQ management HTTP API
//! answers, for `GET /api/v1/admin/queues`.

use std::time::Duration;

use keel_config::Invalid;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpManagementSettings {
    /// `amqp_management.url`: base URL with credentials, e.g.
    /// `http://guest:guest@127.0.0.1:15672` (a monitoring-tagged user is
    /// enough). A secret: it carries the password.
    pub url: SecretString,
    /// `amqp_management.timeout`: a management API that has not answered
    /// within this is reported unavailable (503).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AmqpManagementSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("http://guest:guest@127.0.0.1:15672"),
            timeout: Duration::from_secs(3),
        }
    }
}

impl AmqpManagementSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        match url::Url::parse(self.url.expose_secret()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            // The value is not echoed: it may hold a password.
            _ => {
                return Err(Invalid::new(
                    "amqp_management.url",
                    "must be an http(s) URL with a host",
                ));
            }
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(Invalid::new(
                "amqp_management.timeout",
                "must be between 1ms and 60s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert!(AmqpManagementSettings::default().validate().is_ok());
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_without_echoing_it() {
        let settings = AmqpManagementSettings {
            url: SecretString::from("amqp://user:hunter2@broker:5672"),
            ..AmqpManagementSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.starts_with("amqp_management.url"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
