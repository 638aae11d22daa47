//! The `[events]` configuration section (`GET /api/v1/events`).

use std::time::Duration;

use keel_config::{Invalid, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct EventsSettings {
    /// A `: ping` comment is written to every open stream this often, so
    /// proxies and load balancers do not close a stream that is idle.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The `retry:` hint: how long a browser waits before reconnecting a
    /// stream that ended.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Open streams one user may hold on one instance (tabs, devices);
    /// past it → 429.
    pub max_streams_per_user: usize,
    /// Events buffered per user for streams that have not written the
    /// previous ones yet. A stream that falls this far behind is closed and
    /// resumes from PostgreSQL with `Last-Event-ID`.
    pub buffer: usize,
    /// Finished exports read per query when a stream resumes.
    pub replay_batch: i64,
}

impl Validate for EventsSettings {
    fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("events"));
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat_interval", "must be greater than zero");
        }
        if self.retry.is_zero() {
            return invalid("retry", "must be greater than zero");
        }
        if self.max_streams_per_user == 0 {
            return invalid("max_streams_per_user", "must be at least 1");
        }
        if self.buffer == 0 {
            return invalid("buffer", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.replay_batch) {
            return invalid("replay_batch", "must be between 1 and 10000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> EventsSettings {
        EventsSettings {
            heartbeat_interval: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_streams_per_user: 8,
            buffer: 64,
            replay_batch: 100,
        }
    }

    #[test]
    fn a_zero_heartbeat_is_refused_naming_the_key() {
        let settings = EventsSettings {
            heartbeat_interval: Duration::ZERO,
            ..valid()
        };
        let error = settings.validate().unwrap_err();
        assert!(
            error.to_string().contains("events.heartbeat_interval"),
            "{error}"
        );
    }

    #[test]
    fn a_user_must_be_allowed_at_least_one_stream() {
        let settings = EventsSettings {
            max_streams_per_user: 0,
            ..valid()
        };
        let error = settings.validate().unwrap_err();
        assert!(
            error.to_string().contains("events.max_streams_per_user"),
            "{error}"
        );
        assert!(valid().validate().is_ok());
    }
}
