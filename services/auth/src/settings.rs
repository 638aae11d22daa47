use std::path::PathBuf;
use std::time::Duration;

use keel_cache::RedisSettings;
use keel_config::{Environment, Invalid, Validate};
use keel_db::DatabaseSettings;
use keel_http::HttpSettings;
use keel_messaging::AmqpSettings;
use keel_outbox::RelayOptions;
use keel_telemetry::TelemetrySettings;
use secrecy::SecretString;
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub outbox: RelayOptions,
    pub telemetry: TelemetrySettings,
    pub tokens: TokenSettings,
    pub passwords: PasswordSettings,
    pub sessions: SessionSettings,
    pub throttle: ThrottleSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub algorithm: String,
    pub signing_key: Option<SecretString>,
    pub signing_key_file: Option<PathBuf>,
    pub signing_kid: Option<String>,
    pub retired_key: Option<SecretString>,
    #[serde(default)]
    pub retired_key_files: Vec<PathBuf>,
    pub dev_key_dir: PathBuf,
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_concurrent_hashes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionSettings {
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// Login throttling (ADR 0019): attempts counted before the password is
/// checked; a client network is a /24 (IPv4) or /64 (IPv6).
#[derive(Debug, Clone, Deserialize)]
pub struct ThrottleSettings {
    /// Password checks per (account, client network) within `window`.
    pub max_failures_per_account_network: u32,
    /// Password checks per client network across accounts within `window`.
    pub max_failures_per_network: u32,
    /// Failures against one account from all networks within `window` that
    /// make a flood: past it, each network's budget for the account drops
    /// to `max_failures_per_account_network_in_flood`. Never a lockout.
    pub account_flood_threshold: u32,
    pub max_failures_per_account_network_in_flood: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
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
        self.redis.validate()?;
        keel_config::Validate::validate(&self.amqp)?;
        self.telemetry.validate()?;
        self.tokens.validate(self.environment)?;
        self.passwords.validate()?;
        self.sessions.validate()?;
        self.throttle.validate()
    }
}

impl TokenSettings {
    fn validate(&self, environment: Environment) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("tokens"));
        if self.issuer.trim().is_empty() {
            return invalid("issuer", "must not be empty");
        }
        if self.audience.trim().is_empty() {
            return invalid("audience", "must not be empty");
        }
        if self.access_ttl < Duration::from_secs(30) || self.access_ttl > Duration::from_secs(3600)
        {
            return invalid("access_ttl", "must be between 30s and 1h");
        }
        if keel_token::KeyAlgorithm::parse(&self.algorithm).is_err() {
            return invalid("algorithm", "must be RS256 or EdDSA");
        }
        if self.signing_key.is_some() && self.signing_key_file.is_some() {
            return invalid(
                "signing_key",
                "set signing_key or signing_key_file, not both",
            );
        }
        if environment == Environment::Production
            && self.signing_key.is_none()
            && self.signing_key_file.is_none()
        {
            return invalid(
                "signing_key",
                "production needs a configured signing key (signing_key or signing_key_file)",
            );
        }
        Ok(())
    }
}

impl PasswordSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None).is_err() {
            return Err(
                Invalid::new("memory_kib", "argon2 rejects these parameters").within("passwords"),
            );
        }
        if self.memory_kib < 7168 || self.iterations < 1 {
            return Err(
                Invalid::new("memory_kib", "is below OWASP's minimum (7 MiB)").within("passwords"),
            );
        }
        Ok(())
    }

    /// Permits for concurrent hashes (0 in configuration = one per core).
    pub fn permits(&self) -> usize {
        if self.max_concurrent_hashes > 0 {
            self.max_concurrent_hashes
        } else {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }
    }
}

impl SessionSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if self.refresh_ttl < Duration::from_secs(1) {
            return Err(Invalid::new("refresh_ttl", "must be at least 1s").within("sessions"));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(Invalid::new("idle_timeout", "must be at least 1s").within("sessions"));
        }
        if self.grace_period > Duration::from_secs(60) {
            return Err(Invalid::new("grace_period", "must be at most 60s").within("sessions"));
        }
        Ok(())
    }
}

impl ThrottleSettings {
    fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("throttle"));
        for (key, limit) in [
            (
                "max_failures_per_account_network",
                self.max_failures_per_account_network,
            ),
            ("max_failures_per_network", self.max_failures_per_network),
            ("account_flood_threshold", self.account_flood_threshold),
        ] {
            if limit == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        // At least one attempt even during a flood: the owner, from a
        // network that has not guessed, must still be able to sign in.
        if self.max_failures_per_account_network_in_flood == 0
            || self.max_failures_per_account_network_in_flood
                > self.max_failures_per_account_network
        {
            return invalid(
                "max_failures_per_account_network_in_flood",
                "must be between 1 and max_failures_per_account_network",
            );
        }
        if self.window < Duration::from_secs(1) {
            return Err(Invalid::new("window", "must be at least 1s").within("throttle"));
        }
        Ok(())
    }
}
