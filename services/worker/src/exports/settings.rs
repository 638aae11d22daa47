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
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        // Ten years: far beyond any sensible retention, well inside
        // PostgreSQL's interval arithmetic.
        if self.retention > Duration::from_secs(10 * 366 * 24 * 3600) {
            return invalid("retention", "must be at most ten years");
        }
        self.storage.validate_as("exports.storage")
    }
}
