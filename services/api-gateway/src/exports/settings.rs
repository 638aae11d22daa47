//! The `[exports]` configuration section of the gateway.

use std::time::Duration;

use keel_config::{Environment, Invalid};
use keel_files::StorageSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The download-link secret `config/defaults.toml` ships. Known to everyone
/// who reads this repository: production refuses it.
pub const DEVELOPMENT_DOWNLOAD_SECRET: &str = "keel-development-export-download-secret";

/// Shortest accepted secret: HMAC-SHA256 keys below 32 bytes weaken it.
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsSettings {
    /// Exports a user may have queued or running at once (429 past it).
    pub max_active_per_user: u32,
    /// `Retry-After` of that 429.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Key of the HMAC that signs download links
    /// (`KEEL_EXPORTS__DOWNLOAD_SECRET`).
    pub download_secret: SecretString,
    /// Lifetime of a minted `download_url` (never beyond the export's own
    /// expiry).
    #[serde(with = "humantime_serde")]
    pub download_url_ttl: Duration,
    /// Where the worker stores the files: the same place as its
    /// `[exports.storage]`.
    pub storage: StorageSettings,
}

impl ExportsSettings {
    /// True while the shipped development secret is in use.
    pub fn uses_development_secret(&self) -> bool {
        self.download_secret.expose_secret() == DEVELOPMENT_DOWNLOAD_SECRET
    }

    pub fn validate_in(&self, environment: Environment) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("exports"));
        if self.max_active_per_user == 0 {
            return invalid("max_active_per_user", "must be at least 1");
        }
        if self.retry_after.is_zero() {
            return invalid("retry_after", "must be greater than zero");
        }
        if self.download_url_ttl.is_zero() || self.download_url_ttl > Duration::from_secs(86_400) {
            return invalid("download_url_ttl", "must be between 1s and 24h");
        }
        if self.download_secret.expose_secret().len() < MIN_SECRET_LEN {
            return invalid("download_secret", "must be at least 32 bytes");
        }
        if environment == Environment::Production && self.uses_development_secret() {
            return invalid(
                "download_secret",
                "production refuses the development secret (set KEEL_EXPORTS__DOWNLOAD_SECRET)",
            );
        }
        self.storage.validate_as("exports.storage")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(secret: &str) -> ExportsSettings {
        ExportsSettings {
            max_active_per_user: 3,
            retry_after: Duration::from_secs(30),
            download_secret: SecretString::from(secret.to_owned()),
            download_url_ttl: Duration::from_secs(300),
            storage: StorageSettings::local(".keel/exports"),
        }
    }

    #[test]
    fn production_refuses_the_development_secret_naming_the_key() {
        let error = settings(DEVELOPMENT_DOWNLOAD_SECRET)
            .validate_in(Environment::Production)
            .unwrap_err();
        assert!(
            error.to_string().contains("exports.download_secret"),
            "{error}"
        );
        settings(DEVELOPMENT_DOWNLOAD_SECRET)
            .validate_in(Environment::Development)
            .unwrap();
        settings(&"s".repeat(40))
            .validate_in(Environment::Production)
            .unwrap();
    }

    #[test]
    fn a_short_secret_is_refused() {
        let error = settings("short")
            .validate_in(Environment::Development)
            .unwrap_err();
        assert!(error.to_string().contains("download_secret"), "{error}");
    }
}
