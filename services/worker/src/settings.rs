use std::collections::BTreeMap;
use std::time::Duration;

use keel_config::{Environment, Invalid, Validate};
use keel_db::DatabaseSettings;
use keel_http::HttpSettings;
use keel_messaging::AmqpSettings;
use keel_outbox::RelayOptions;
use keel_telemetry::TelemetrySettings;
use keel_webhooks::Scheme;
use secrecy::SecretString;
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub outbox: RelayOptions,
    pub telemetry: TelemetrySettings,
    pub jobs: JobsSettings,
    pub webhooks: WebhooksSettings,
    pub shopify: ShopifySettings,
    /// `[exports]`: the export consumer, retention and object storage.
    pub exports: crate::exports::ExportsSettings,
}

/// `[jobs.*]`: one consumer per job queue.
#[derive(Debug, Clone, Deserialize)]
pub struct JobsSettings {
    pub webhook: ConsumerSettings,
}

/// How one queue is drained by this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Unacknowledged deliveries the broker pushes ahead to this process.
    pub prefetch: u16,
    /// Jobs handled at once (more than `prefetch` is never useful) when
    /// jobs are applied one at a time (`batch_size = 1`).
    pub concurrency: usize,
    /// Most jobs applied in one transaction; 1 applies each job on its own
    /// (ADR 0026). A batch takes at most what the prefetch window holds.
    pub batch_size: usize,
    /// Longest a batch waits for more jobs after its first one.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Batches applied at once, each on its own connection, so that one
    /// batch's commit (its WAL flush) overlaps the next one's work.
    pub batches_in_flight: usize,
}

/// Most jobs in one batch: past a few hundred the transaction only holds
/// its locks longer (ADR 0026).
const MAX_BATCH_SIZE: usize = 1000;
/// Most batches at once: each holds a database connection.
const MAX_BATCHES_IN_FLIGHT: usize = 16;
/// Longest a batch may wait for more jobs: the wait is latency added to
/// every job of a quiet queue.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

impl ConsumerSettings {
    fn validate(&self, section: &'static str) -> Result<(), Invalid> {
        if !(1..=1000).contains(&self.prefetch) {
            return Err(Invalid::new("prefetch", "must be between 1 and 1000").within(section));
        }
        if self.concurrency == 0 || self.concurrency > usize::from(self.prefetch) {
            return Err(
                Invalid::new("concurrency", "must be between 1 and prefetch").within(section),
            );
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(Invalid::new("batch_size", "must be between 1 and 1000").within(section));
        }
        if !(1..=MAX_BATCHES_IN_FLIGHT).contains(&self.batches_in_flight) {
            return Err(
                Invalid::new("batches_in_flight", "must be between 1 and 16").within(section),
            );
        }
        if self.batch_wait > MAX_BATCH_WAIT {
            return Err(Invalid::new("batch_wait", "must be at most 1s").within(section));
        }
        Ok(())
    }

    /// The batch mode these settings ask for, `None` for one job at a time.
    /// A batch is never larger than the prefetch window (it could not
    /// fill), and no more batches run than the window can fill.
    pub fn batches(&self) -> Option<keel_messaging::JobBatches> {
        let max_size = self.batch_size.min(usize::from(self.prefetch)).max(1);
        if max_size <= 1 {
            return None;
        }
        let fillable = usize::from(self.prefetch).div_ceil(max_size);
        Some(keel_messaging::JobBatches {
            max_size,
            max_wait: self.batch_wait,
            in_flight: self.batches_in_flight.min(fillable).max(1),
        })
    }
}

/// `[webhooks]`: what the worker needs to know about the sources the
/// gateway captures for.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhooksSettings {
    /// Source name (`/webhooks/{source}`) → its scheme, which decides how
    /// the worker reads its events. Keep it in step with the gateway's
    /// `[webhooks.sources.*]`.
    pub sources: BTreeMap<String, SourceSettings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SourceSettings {
    pub scheme: Scheme,
}

/// `[shopify]`: the Admin API the worker reads fulfilments from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifySettings {
    /// e.g. `https://example.myshopify.com`; unset: no fulfilment lookups.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// `X-Shopify-Access-Token`; needed with `api_base_url`.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    /// The Admin API version in the path (`/admin/api/{version}/...`).
    pub api_version: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The whole request, response body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A `Retry-After` up to this long is waited out inside the job; a
    /// longer one fails the attempt (retried on the `amqp.retry` schedule)
    /// and holds back every call until it has passed.
    #[serde(with = "humantime_serde")]
    pub max_retry_after_wait: Duration,
}

impl ShopifySettings {
    fn validate(&self) -> Result<(), Invalid> {
        let within = |e: Invalid| e.within("shopify");
        if let Some(url) = &self.api_base_url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return Err(within(Invalid::new(
                        "api_base_url",
                        "must be an http(s) URL",
                    )));
                }
            }
            if self.access_token.is_none() {
                return Err(within(Invalid::new(
                    "access_token",
                    "is required when shopify.api_base_url is set",
                )));
            }
        }
        if self.api_version.is_empty()
            || !self
                .api_version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(within(Invalid::new(
                "api_version",
                "must look like 2024-10",
            )));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(within(Invalid::new(
                "request_timeout",
                "timeouts must be greater than zero",
            )));
        }
        Ok(())
    }
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
        self.jobs.webhook.validate("jobs.webhook")?;
        // Each job (or batch) in flight holds a connection while it
        // commits; more than the pool has only queue up for one.
        let connections = self.database.max_connections;
        if self.jobs.webhook.concurrency > connections {
            return Err(
                Invalid::new("concurrency", "must be at most database.max_connections")
                    .within("jobs.webhook"),
            );
        }
        if self.jobs.webhook.batches_in_flight > connections {
            return Err(Invalid::new(
                "batches_in_flight",
                "must be at most database.max_connections",
            )
            .within("jobs.webhook"));
        }
        self.shopify.validate()?;
        self.exports.validate()?;
        // The sweeper must not fail an export whose retry is still waiting
        // in a delay queue (ADR 0025).
        let longest_retry = self
            .amqp
            .retry
            .delays
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        if self.exports.abandoned_after <= longest_retry + self.exports.lease_ttl {
            return Err(Invalid::new(
                "abandoned_after",
                "must be longer than the longest amqp.retry delay plus exports.lease_ttl",
            )
            .within("exports"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_defaults_are_valid_and_name_the_four_development_sources() {
        let settings = Settings::defaults().unwrap();
        assert!(settings.validate().is_ok());
        let schemes: Vec<_> = settings
            .webhooks
            .sources
            .iter()
            .map(|(name, source)| (name.as_str(), source.scheme.as_str()))
            .collect();
        assert_eq!(
            schemes,
            [
                ("github", "github"),
                ("shopify", "shopify"),
                ("standard", "standard"),
                ("stripe", "stripe")
            ]
        );
        assert_eq!(settings.amqp.retry.max_attempts(), 6);
    }

    #[test]
    fn bad_consumer_and_shopify_values_are_reported_by_their_keys() {
        let mut settings = Settings::defaults().unwrap();
        settings.jobs.webhook.concurrency = 64;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("jobs.webhook.concurrency"), "{error}");

        let mut settings = Settings::defaults().unwrap();
        settings.shopify.api_base_url = Some("https://shop.example".into());
        settings.shopify.access_token = None;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("shopify.access_token"), "{error}");

        let mut settings = Settings::defaults().unwrap();
        settings.shopify.api_base_url = Some("ftp://shop.example".into());
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("shopify.api_base_url"), "{error}");
    }

    #[test]
    fn webhook_batches_are_validated_and_never_larger_than_the_prefetch_window() {
        let settings = Settings::defaults().unwrap();
        let batches = settings.jobs.webhook.batches().unwrap();
        assert!(batches.max_size > 1);
        assert!(
            batches.max_size * batches.in_flight <= usize::from(settings.jobs.webhook.prefetch)
        );

        let mut jobs = settings.jobs.webhook.clone();
        jobs.prefetch = 2;
        let batches = jobs.batches().unwrap();
        assert_eq!((batches.max_size, batches.in_flight), (2, 1));
        jobs.batch_size = 1;
        assert!(jobs.batches().is_none());

        for (key, change) in [
            (
                "batch_size",
                (|j: &mut ConsumerSettings| j.batch_size = 0) as fn(&mut _),
            ),
            ("batch_size", |j| j.batch_size = 5000),
            ("batches_in_flight", |j| j.batches_in_flight = 0),
            ("batch_wait", |j| j.batch_wait = Duration::from_secs(5)),
        ] {
            let mut settings = Settings::defaults().unwrap();
            change(&mut settings.jobs.webhook);
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(&format!("jobs.webhook.{key}")), "{error}");
        }
    }

    #[test]
    fn an_export_sweep_that_could_pre_empt_a_retry_or_a_live_upload_is_refused() {
        let mut settings = Settings::defaults().unwrap();
        // The longest default retry delay is an hour.
        settings.exports.abandoned_after = std::time::Duration::from_secs(3600);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("exports.abandoned_after"), "{error}");

        let mut settings = Settings::defaults().unwrap();
        settings.exports.orphaned_after = settings.exports.statement_timeout;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("exports.orphaned_after"), "{error}");
    }
}
