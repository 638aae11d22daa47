//! Exports: the `{ns}.jobs.export` consumer that builds export files, and
//! the retention sweep that removes them.
//!
//! # Layout
//! - [`handler`]: [`ExportHandler`] — one `export.run` job: take the
//!   export's lease (a finished one is never rebuilt, a live lease means a
//!   duplicate job), build its file renewing the lease, record success or,
//!   on the last attempt, failure (each with its event) while still holding
//!   it.
//! - [`file`]: `COPY ... TO STDOUT` streamed through a row counter, gzip
//!   and SHA-256 into object storage (`keel_files`).
//! - [`rows`]: [`rows::RowCounter`], quote-aware record counting.
//! - [`retention`]: the sweeper — expired files removed and their exports
//!   marked `expired`; abandoned exports failed; staging files of killed
//!   uploads and unreferenced objects removed (ADR 0025).
//! - [`settings`]: the `[exports]` section.
//!
//! Design and trade-offs: `docs/adr/0012-exports.md`.

pub mod file;
pub mod handler;
pub mod retention;
pub mod rows;
pub mod settings;

use keel_db::Pool;
use keel_files::Storage;
use tokio_util::sync::CancellationToken;

pub use handler::ExportHandler;
pub use settings::ExportsSettings;

use crate::exports::file::BuildOptions;

/// The worker's exports part, built at start-up: the job handler for the
/// consumer, and the retention sweep to spawn.
#[derive(Debug, Clone)]
pub struct Exports {
    pool: Pool,
    storage: Storage,
    settings: ExportsSettings,
}

impl Exports {
    /// Opens the storage (a local root is created when missing).
    pub fn build(pool: Pool, settings: &ExportsSettings) -> Result<Self, keel_files::Error> {
        Ok(Self {
            pool,
            storage: Storage::new(&settings.storage)?,
            settings: settings.clone(),
        })
    }

    /// The handler of `{ns}.jobs.export`; `max_attempts` is the retry
    /// policy's (`amqp.retry`).
    pub fn handler(&self, max_attempts: u32) -> ExportHandler {
        ExportHandler::new(
            self.pool.clone(),
            self.storage.clone(),
            BuildOptions {
                progress_interval: self.settings.progress_interval,
                statement_timeout: self.settings.statement_timeout,
            },
            self.settings.retention,
            self.settings.lease_ttl,
            max_attempts,
        )
    }

    /// The sweeper (retention, abandoned exports, orphaned files), every
    /// `exports.sweep_interval` until `shutdown`.
    pub async fn run_retention(self, shutdown: CancellationToken) {
        let settings = retention::SweepSettings {
            interval: self.settings.sweep_interval,
            retention: self.settings.retention,
            abandoned_after: self.settings.abandoned_after,
            orphaned_after: self.settings.orphaned_after,
        };
        retention::run(self.pool, self.storage, settings, shutdown).await;
    }
}
