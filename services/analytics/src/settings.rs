use std::time::Duration;

use keel_config::{Environment, Invalid, Validate};
use keel_db::DatabaseSettings;
use keel_http::HttpSettings;
use keel_messaging::AmqpSettings;
use keel_telemetry::TelemetrySettings;
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub telemetry: TelemetrySettings,
    pub authn: AuthnSettings,
    pub ingest: IngestSettings,
    pub retention: RetentionSettings,
    pub query: QuerySettings,
}

/// `[authn]`: how callers of the query API are verified (their bearer
/// token against the auth service's JWK Set; never identity headers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthnSettings {
    /// The auth service's `/.well-known/jwks.json`.
    pub jwks_url: url::Url,
    /// Expected `iss` of access tokens (auth's `tokens.issuer`).
    pub issuer: String,
    /// Expected `aud` of access tokens (auth's `tokens.audience`).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The JWK Set is fetched again after this long (key rotation).
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// At most one JWK Set fetch per this interval, however many tokens
    /// name an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch_interval: Duration,
    /// Budget of one JWK Set fetch.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
}

/// `[ingest]`: how events are batched off the queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    pub prefetch: u16,
    /// Batch consumers per process, each on its own channel and database
    /// connection: while one batch commits (waits for the WAL flush), the
    /// next one is being written.
    pub consumers: usize,
}

/// `[retention]`: raw event partitions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub raw_days: u32,
    pub partitions_ahead: u32,
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

/// `[query]`: limits of the query API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    pub max_points: usize,
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
}

impl Settings {
    /// The built-in defaults alone (tests start from these).
    pub fn defaults() -> Result<Self, keel_config::Error> {
        keel_config::load_from(DEFAULTS, None, Default::default())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate()?;
        self.database.validate()?;
        keel_config::Validate::validate(&self.amqp)?;
        self.telemetry.validate()?;
        self.authn.validate().map_err(|e| e.within("authn"))?;
        self.ingest.validate().map_err(|e| e.within("ingest"))?;
        self.retention
            .validate()
            .map_err(|e| e.within("retention"))?;
        self.query.validate().map_err(|e| e.within("query"))?;
        Ok(())
    }
}

impl AuthnSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if !matches!(self.jwks_url.scheme(), "http" | "https") {
            return Err(Invalid::new("jwks_url", "must be an http(s) URL"));
        }
        if self.issuer.trim().is_empty() {
            return Err(Invalid::new("issuer", "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(Invalid::new("audience", "must not be empty"));
        }
        // More than a few minutes of skew would keep expired tokens alive.
        if self.leeway > Duration::from_secs(300) {
            return Err(Invalid::new("leeway", "must be at most 5m"));
        }
        if self.jwks_max_age < Duration::from_secs(1) {
            return Err(Invalid::new("jwks_max_age", "must be at least 1s"));
        }
        if self.jwks_min_refetch_interval.is_zero() {
            return Err(Invalid::new(
                "jwks_min_refetch_interval",
                "must be more than zero (it bounds fetches caused by unknown kids)",
            ));
        }
        if self.jwks_timeout.is_zero() || self.jwks_timeout > Duration::from_secs(60) {
            return Err(Invalid::new("jwks_timeout", "must be between 1ms and 60s"));
        }
        Ok(())
    }
}

impl IngestSettings {
    fn validate(&self) -> Result<(), Invalid> {
        // One batch is one INSERT with array parameters; past this size a
        // transaction holds locks for long and a redelivery repeats a lot.
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(Invalid::new("batch_size", "must be between 1 and 10000"));
        }
        if self.batch_wait.is_zero() || self.batch_wait > Duration::from_secs(60) {
            return Err(Invalid::new("batch_wait", "must be between 1ms and 60s"));
        }
        if self.prefetch == 0 {
            return Err(Invalid::new("prefetch", "must be at least 1"));
        }
        // Each consumer holds a pool connection for its batch; more than a
        // few only adds lock waits on the shared store-wide rollup rows.
        if !(1..=8).contains(&self.consumers) {
            return Err(Invalid::new("consumers", "must be between 1 and 8"));
        }
        Ok(())
    }
}

impl RetentionSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if !(1..=3650).contains(&self.raw_days) {
            return Err(Invalid::new("raw_days", "must be between 1 and 3650"));
        }
        if !(1..=366).contains(&self.partitions_ahead) {
            return Err(Invalid::new(
                "partitions_ahead",
                "must be between 1 and 366",
            ));
        }
        if self.maintenance_interval < Duration::from_secs(1) {
            return Err(Invalid::new("maintenance_interval", "must be at least 1s"));
        }
        Ok(())
    }
}

impl QuerySettings {
    fn validate(&self) -> Result<(), Invalid> {
        if !(1..=100_000).contains(&self.max_points) {
            return Err(Invalid::new("max_points", "must be between 1 and 100000"));
        }
        if self.max_range < Duration::from_secs(60) {
            return Err(Invalid::new("max_range", "must be at least one minute"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_batch_consumers_by_default_and_the_count_is_bounded() {
        let settings = Settings::defaults().expect("the built-in defaults load");
        assert_eq!(settings.ingest.consumers, 2);
        assert!(settings.ingest.validate().is_ok());
        for bad in [0, 9] {
            let ingest = IngestSettings {
                consumers: bad,
                ..settings.ingest.clone()
            };
            let error = ingest.validate().expect_err("out of range");
            assert!(error.to_string().contains("consumers"), "{error}");
        }
    }

    #[test]
    fn the_authn_defaults_match_auths_issuer_and_a_zero_refetch_interval_is_refused() {
        let settings = Settings::defaults().expect("the built-in defaults load");
        assert_eq!(settings.authn.issuer, "keel-auth");
        assert_eq!(settings.authn.audience, "keel");
        assert_eq!(
            settings.authn.jwks_url.as_str(),
            "http://127.0.0.1:8081/.well-known/jwks.json"
        );
        assert!(settings.validate().is_ok());
        let authn = AuthnSettings {
            jwks_min_refetch_interval: Duration::ZERO,
            ..settings.authn.clone()
        };
        let error = Settings { authn, ..settings }
            .validate()
            .expect_err("a zero interval is refused");
        assert!(
            error.to_string().contains("jwks_min_refetch_interval"),
            "{error}"
        );
    }
}
