//! Exports: the `{ns}.jobs.export` consumer that builds export files, and
//! the retention sweep that removes them.
//!
//! # Layout
//! - [`handler`]: [`ExportHandler`] — one `export.run` job: start the
//!   export (a finished one is never rebuilt), build its file, record
//!   success or, on the last attempt, failure (each with its event).
//! - [`file`]: `COPY ... TO STDOUT` streamed through a row counter, gzip
//!   and SHA-256 into object storage (`keel_files`).
//! - [`rows`]: [`rows::RowCounter`], quote-aware record counting.
//! - [`retention`]: the sweep that deletes expired files and marks their
//!   exports `expired`.
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
            max_attempts,
        )
    }

    /// The retention sweep, every `exports.sweep_interval` until `shutdown`.
    pub async fn run_retention(self, shutdown: CancellationToken) {
        retention::run(
            self.pool,
            self.storage,
            self.settings.sweep_interval,
            shutdown,
        )
        .await;
    }
}
