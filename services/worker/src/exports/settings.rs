//! The `[exports]` configuration section of the worker.

use std::time::Duration;

use keel_config::Invalid;
use keel_files::StorageSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsSettings {
    /// Deliveries of `{ns}.jobs.export` the broker pushes ahead, unacked.
    pub prefetch: u16,
    /// Export files built at once by this process. Each holds two database
    /// connections (the COPY, and short progress updates) and up to
    /// `storage.part_size × (storage.upload_concurrency + 1)` bytes.
    pub concurrency: usize,
    /// How long a finished export (and its file) is kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired exports are looked for and removed.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// `rows_written` is updated at most this often while a file is built.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// The longest one file may take to stream out of PostgreSQL (replaces
    /// `database.statement_timeout` for the COPY alone).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long a builder's lease on an export lasts; it is renewed every
    /// third of this while the file is written. A builder silent for this
    /// long is presumed dead: the export's next job takes over (ADR 0025).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// An unfinished export nobody has worked on for this long (a running
    /// one since its lease ran out, a queued one since it was created) is
    /// failed by the sweeper, freeing the user's slot. Longer than the
    /// longest `amqp.retry` delay plus `lease_ttl`, so a retry on its way
    /// is never pre-empted.
    #[serde(with = "humantime_serde")]
    pub abandoned_after: Duration,
    /// Staging files of killed uploads and objects no export refers to are
    /// removed once untouched for this long (longer than
    /// `statement_timeout`: a live build writes its upload at least that
    /// often, and its finished object is recorded right after).
    #[serde(with = "humantime_serde")]
    pub orphaned_after: Duration,
    /// Where files go; the gateway's `[exports.storage]` must name the same
    /// place.
    pub storage: StorageSettings,
}

impl ExportsSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("exports"));
        if !(1..=1000).contains(&self.prefetch) {
            return invalid("prefetch", "must be between 1 and 1000");
        }
        if self.concurrency == 0 || self.concurrency > usize::from(self.prefetch) {
            return invalid("concurrency", "must be between 1 and exports.prefetch");
        }
        for (key, value) in [
            ("retention", self.retention),
            ("sweep_interval", self.sweep_interval),
            ("progress_interval", self.progress_interval),
            ("statement_timeout", self.statement_timeout),
            ("lease_ttl", self.lease_ttl),
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if self.abandoned_after <= self.lease_ttl {
            return invalid("abandoned_after", "must be longer than exports.lease_ttl");
        }
        if self.orphaned_after <= self.statement_timeout {
            return invalid(
                "orphaned_after",
                "must be longer than exports.statement_timeout",
            );
        }
        // Ten years: far beyond any sensible retention, well inside
        // PostgreSQL's interval arithmetic.
        if self.retention > Duration::from_secs(10 * 366 * 24 * 3600) {
            return invalid("retention", "must be at most ten years");
        }
        self.storage.validate_as("exports.storage")
    }
}
