//! The `[webhooks]` configuration section: one table per source.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_config::{Environment, Invalid};
use keel_webhooks::group_commit::GroupCommitOptions;
use keel_webhooks::{Scheme, Verifier};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The secrets `config/defaults.toml` ships, one per development source.
/// Known to everyone who reads this repository: production refuses them.
pub const DEVELOPMENT_SECRETS: [&str; 4] = [
    "keel-development-shopify-secret",
    "keel-development-github-secret",
    "whsec_keel-development-stripe-secret",
    // base64 of "keel-development-standard-secret"
    "whsec_a2VlbC1kZXZlbG9wbWVudC1zdGFuZGFyZC1zZWNyZXQ=",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// By name: the `{source}` of `POST /webhooks/{source}`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
    /// How concurrent captures share commits: deliveries that arrive
    /// while a capture is committing are stored together in the next
    /// statement (`keel_webhooks::group_commit`); each sender is still
    /// answered only after the commit that holds its delivery.
    #[serde(default)]
    pub group_commit: GroupCommitOptions,
    /// A body still arriving this long after the request's head is cut with
    /// 408 (slow senders hold a connection and a buffer; actix's own
    /// `client_request_timeout` covers only the head).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub scheme: Scheme,
    /// Every active secret; any of them verifies (rotation).
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    /// An environment variable whose value, when set and not empty,
    /// replaces `secrets` (comma-separated for several).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Standard Webhooks Ed25519 public keys (`whpk_<base64>`) for `v1a`.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// How far a signed timestamp may be from now (Stripe, Standard).
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Largest accepted body, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_body_limit() -> usize {
    1024 * 1024
}

impl SourceSettings {
    /// The active secrets: from `secret_env` when that variable is set,
    /// else `secrets`.
    pub fn effective_secrets(&self) -> Vec<SecretString> {
        self.effective_secrets_with(|name| std::env::var(name).ok())
    }

    /// [`effective_secrets`](Self::effective_secrets) with an explicit
    /// environment (tests).
    pub fn effective_secrets_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Vec<SecretString> {
        let from_env = self
            .secret_env
            .as_deref()
            .and_then(env)
            .filter(|value| !value.trim().is_empty());
        match from_env {
            Some(value) => value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect(),
            None => self.secrets.clone(),
        }
    }

    /// The development secret this source is using, if any.
    pub fn development_secret(&self, secrets: &[SecretString]) -> Option<&'static str> {
        DEVELOPMENT_SECRETS
            .into_iter()
            .find(|dev| secrets.iter().any(|s| s.expose_secret() == *dev))
    }

    /// A verifier over `secrets` (from [`effective_secrets`](Self::effective_secrets)).
    pub fn verifier(
        &self,
        secrets: &[SecretString],
    ) -> Result<Verifier, keel_webhooks::SecretError> {
        let exposed: Vec<&str> = secrets.iter().map(ExposeSecret::expose_secret).collect();
        Verifier::new(self.scheme, &exposed, &self.public_keys, self.tolerance)
    }
}

impl WebhooksSettings {
    /// Checks every source in `environment`, with `env` as the process
    /// environment (`secret_env` lookups).
    pub fn validate_in(
        &self,
        environment: Environment,
        env: impl Fn(&str) -> Option<String> + Copy,
    ) -> Result<(), Invalid> {
        if self.body_read_timeout.is_zero() || self.body_read_timeout > Duration::from_secs(300) {
            return Err(Invalid::new(
                "body_read_timeout",
                "must be greater than zero and at most 5m",
            )
            .within("webhooks"));
        }
        if !(1..=4096).contains(&self.group_commit.max_batch) {
            return Err(
                Invalid::new("group_commit.max_batch", "must be between 1 and 4096")
                    .within("webhooks"),
            );
        }
        if self.group_commit.max_batch_bytes == 0 {
            return Err(
                Invalid::new("group_commit.max_batch_bytes", "must be at least 1")
                    .within("webhooks"),
            );
        }
        if !(1..=64).contains(&self.group_commit.concurrent_batches) {
            return Err(Invalid::new(
                "group_commit.concurrent_batches",
                "must be between 1 and 64 (each holds a database connection)",
            )
            .within("webhooks"));
        }
        if !(1..=1_000_000).contains(&self.group_commit.max_waiting) {
            return Err(Invalid::new(
                "group_commit.max_waiting",
                "must be between 1 and 1000000 (captures held in memory)",
            )
            .within("webhooks"));
        }
        let capture_timeout = self.group_commit.capture_timeout;
        if capture_timeout.is_zero() || capture_timeout > Duration::from_secs(60) {
            return Err(Invalid::new(
                "group_commit.capture_timeout",
                "must be greater than zero and at most 1m (senders stop waiting long before)",
            )
            .within("webhooks"));
        }
        for (name, source) in &self.sources {
            let key = |field: &str| format!("sources.{name}.{field}");
            let invalid = |field: &str, reason: String| {
                Err(Invalid::new(key(field), reason).within("webhooks"))
            };
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid_name {
                return Err(Invalid::new(
                    format!("sources.{name}"),
                    "a source name is 1 to 64 of a-z, 0-9, - and _ (it is a URL path segment)",
                )
                .within("webhooks"));
            }
            if source.body_limit == 0 {
                return invalid("body_limit", "must be at least 1 byte".into());
            }
            if source.scheme.has_timestamp() && source.tolerance.is_zero() {
                return invalid("tolerance", "must be greater than zero".into());
            }
            let secrets = source.effective_secrets_with(env);
            if let Err(e) = source.verifier(&secrets) {
                let field = match e {
                    keel_webhooks::SecretError::PublicKey(_)
                    | keel_webhooks::SecretError::PublicKeyOutsideStandard => "public_keys",
                    _ => "secrets",
                };
                return invalid(field, e.to_string());
            }
            if environment == Environment::Production
                && source.development_secret(&secrets).is_some()
            {
                let hint = source
                    .secret_env
                    .as_deref()
                    .map(|var| format!(" (set {var})"))
                    .unwrap_or_default();
                return invalid(
                    "secrets",
                    format!("production refuses the development secret{hint}"),
                );
            }
        }
        Ok(())
    }
}
