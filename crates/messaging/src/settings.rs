//! The `amqp` section of every service's configuration.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::error::Error;

/// Connection, topology and retry settings for the message bus.
///
/// Every field has a default (see [`AmqpSettings::default`]), so a service's
/// configuration file only names what differs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp.url`: broker address with credentials, e.g.
    /// `amqp://guest:guest@127.0.0.1:5672/%2f` (`%2f` is the vhost `/`).
    pub url: SecretString,
    /// `amqp.namespace`: prefix of every exchange and queue name, so that
    /// parallel tests (and several deployments on one broker) do not collide.
    pub namespace: String,
    /// `amqp.prefetch`: unacknowledged deliveries the broker may push to one
    /// consumer at a time.
    pub prefetch: u16,
    /// `amqp.connect_timeout`: give up a connection attempt after this long.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `amqp.publish_timeout`: give up waiting for a publisher confirm after
    /// this long (the message is then treated as not published).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// `amqp.reconnect`: backoff between reconnection attempts.
    pub reconnect: ReconnectSettings,
    /// `amqp.retry`: when a handler fails transiently, how long to wait
    /// before each new attempt.
    pub retry: RetryPolicy,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            namespace: "keel".to_owned(),
            prefetch: 16,
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            reconnect: ReconnectSettings::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Exponential backoff between reconnection attempts, doubling from `min` up
/// to `max`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectSettings {
    /// `amqp.reconnect.min`: first delay after a failure.
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    /// `amqp.reconnect.max`: the delay never grows past this.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl ReconnectSettings {
    /// Delay before reconnection attempt `failures` (1 after the first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// The retry schedule of a consumer: a handler that fails transiently on
/// attempt `n` is tried again after `delays[n - 1]` (less up to `jitter` of
/// it), so a message is attempted at most `delays.len() + 1` times before it
/// is dead-lettered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// `amqp.retry.delays`: one entry per retry, e.g. `["1s", "10s", "1m"]`.
    /// Each distinct delay becomes a delay queue (`{ns}.retry.1s`).
    #[serde(deserialize_with = "humantime_list")]
    pub delays: Vec<Duration>,
    /// `amqp.retry.jitter`: fraction (0..=1) of each delay that is randomly
    /// taken off, so a burst of failures does not come back as a burst.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ],
            jitter: 0.2,
        }
    }
}

/// A list of humantime strings (`["1s", "10m"]`).
fn humantime_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Duration>, D::Error> {
    let items = Vec::<humantime_serde::Serde<Duration>>::deserialize(deserializer)?;
    Ok(items
        .into_iter()
        .map(humantime_serde::Serde::into_inner)
        .collect())
}

impl AmqpSettings {
    /// Cross-field checks, run once after loading; the error names the key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key: &'static str, reason: &str| Error::InvalidSettings {
            key,
            reason: reason.to_owned(),
        };
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(invalid(
                "amqp.namespace",
                "must be non-empty and contain only ASCII letters, digits, '-' and '_'",
            ));
        }
        if !(1..=1000).contains(&self.prefetch) {
            return Err(invalid("amqp.prefetch", "must be between 1 and 1000"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("amqp.connect_timeout", "must be greater than zero"));
        }
        if self.publish_timeout.is_zero() {
            return Err(invalid("amqp.publish_timeout", "must be greater than zero"));
        }
        if self.reconnect.min.is_zero() {
            return Err(invalid("amqp.reconnect.min", "must be greater than zero"));
        }
        if self.reconnect.max < self.reconnect.min {
            return Err(invalid(
                "amqp.reconnect.max",
                "must be at least amqp.reconnect.min",
            ));
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) {
            return Err(invalid("amqp.retry.jitter", "must be between 0 and 1"));
        }
        // A delay queue's TTL is an integer number of milliseconds, and a
        // zero TTL would dead-letter at once (a hot retry loop).
        if self
            .retry
            .delays
            .iter()
            .any(|d| d.as_millis() == 0 || d.as_millis() > u128::from(u32::MAX))
        {
            return Err(invalid(
                "amqp.retry.delays",
                "each delay must be between 1ms and about 49 days",
            ));
        }
        Ok(())
    }
}

/// Lets services validate the `amqp` section with the rest of their
/// configuration; the key in the message is already fully qualified.
impl keel_config::Validate for AmqpSettings {
    fn validate(&self) -> Result<(), keel_config::Invalid> {
        AmqpSettings::validate(self).map_err(|e| match e {
            Error::InvalidSettings { key, reason } => keel_config::Invalid::new(key, reason),
            other => keel_config::Invalid::new("amqp", other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(AmqpSettings::default().validate().is_ok());
    }

    #[test]
    fn an_out_of_range_prefetch_is_reported_by_its_key() {
        let settings = AmqpSettings {
            prefetch: 0,
            ..AmqpSettings::default()
        };
        let error = settings.validate().unwrap_err().to_string();
        assert_eq!(error, "amqp.prefetch must be between 1 and 1000");
    }

    #[test]
    fn delays_are_read_as_humantime_strings() {
        let policy: RetryPolicy =
            serde_json::from_str(r#"{"delays": ["200ms", "1m"], "jitter": 0}"#).unwrap();
        assert_eq!(
            policy.delays,
            vec![Duration::from_millis(200), Duration::from_secs(60)]
        );
    }

    #[test]
    fn reconnect_delay_doubles_up_to_the_maximum() {
        let reconnect = ReconnectSettings {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(reconnect.delay(1), Duration::from_millis(100));
        assert_eq!(reconnect.delay(2), Duration::from_millis(200));
        assert_eq!(reconnect.delay(5), Duration::from_secs(1));
        assert_eq!(reconnect.delay(100), Duration::from_secs(1));
    }
}
