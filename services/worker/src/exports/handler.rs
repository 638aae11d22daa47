//! The `{ns}.jobs.export` handler: one `export.run` job builds one file.

use std::time::Duration;

use keel_commerce::exports::{self, Start};
use keel_contracts::{Envelope, Job};
use keel_db::Pool;
use keel_files::Storage;
use keel_messaging::{Handler, HandlerError, Incoming};
use uuid::Uuid;

use crate::exports::file::{self, BuildOptions};

/// What the user reads when the export cannot be built at all (its row is
/// unreadable).
const UNREADABLE: &str = "The export request could not be read; please request it again.";

/// Builds export files. Idempotent by export id: a finished export is
/// acknowledged without work; a redelivered unfinished one starts over and
/// rewrites the same object.
#[derive(Debug, Clone)]
pub struct ExportHandler {
    pool: Pool,
    storage: Storage,
    options: BuildOptions,
    retention: Duration,
    /// `amqp.retry`'s attempts: the last one that fails marks the export
    /// failed instead of leaving it for a retry that will not come.
    max_attempts: u32,
}

impl ExportHandler {
    pub fn new(
        pool: Pool,
        storage: Storage,
        options: BuildOptions,
        retention: Duration,
        max_attempts: u32,
    ) -> Self {
        Self {
            pool,
            storage,
            options,
            retention,
            max_attempts,
        }
    }

    async fn run(&self, export_id: Uuid, attempt: u32) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await.map_err(HandlerError::transient)?;
        let export = match exports::start(&mut client, export_id).await {
            Ok(Start::Run(export)) => export,
            Ok(Start::Finished(export)) => {
                tracing::info!(%export_id, status = %export.status, "export already finished; nothing to do");
                return Ok(());
            }
            Err(exports::Error::NotFound) => {
                return Err(HandlerError::permanent(format!(
                    "export {export_id} does not exist"
                )));
            }
            Err(e @ exports::Error::Corrupt(_)) => {
                self.fail(export_id, UNREADABLE).await?;
                return Err(HandlerError::permanent(e));
            }
            Err(e) => return Err(HandlerError::transient(e)),
        };
        tracing::info!(%export_id, attempt, format = export.format.as_str(), "building export");
        match file::build(
            &mut client,
            &self.pool,
            &self.storage,
            &export,
            &self.options,
        )
        .await
        {
            Ok(written) => {
                exports::succeed(&mut client, export_id, &written, self.retention)
                    .await
                    .map_err(HandlerError::transient)?;
                tracing::info!(%export_id, rows = written.rows, bytes = written.bytes, "export succeeded");
                Ok(())
            }
            Err(error) if attempt < self.max_attempts => {
                // Stays `running`; the retry starts it over.
                Err(HandlerError::transient(error))
            }
            Err(error) => {
                self.fail(export_id, error.user_message()).await?;
                Err(HandlerError::permanent(error))
            }
        }
    }

    /// Marks the export failed (with `export.failed`). If even that cannot
    /// be written, the job is retried so the user is not left waiting on an
    /// export nobody works on.
    async fn fail(&self, export_id: Uuid, message: &str) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await.map_err(HandlerError::transient)?;
        match exports::fail(&mut client, export_id, message, self.retention).await {
            Ok(_) | Err(exports::Error::IllegalTransition(_)) => Ok(()),
            Err(e) => Err(HandlerError::transient(e)),
        }
    }
}

impl Handler for ExportHandler {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let envelope: Envelope<Job> = message.decode()?;
        match envelope.body {
            Job::ExportRun(run) => self.run(run.export_id, message.attempt()).await,
            other => Err(HandlerError::permanent(format!(
                "{} is not an export job",
                keel_contracts::MessageBody::message_type(&other)
            ))),
        }
    }
}
