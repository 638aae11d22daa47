//! The `{ns}.jobs.export` handler: one `export.run` job builds one file.

use std::time::Duration;

use keel_commerce::exports::{self, Acquired, Lease, leases};
use keel_contracts::{Envelope, Job};
use keel_db::Pool;
use keel_files::Storage;
use keel_messaging::{Handler, HandlerError, Incoming};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::exports::file::{self, BuildError, BuildOptions};

/// What the user reads when the export cannot be built at all (its row is
/// unreadable).
const UNREADABLE: &str = "The export request could not be read; please request it again.";

/// Builds export files under a lease (ADR 0025). A finished export is
/// acknowledged without work; a job that finds another builder's live
/// lease is a duplicate and builds nothing; one that finds it expired (or
/// is the broker's redelivery of a job whose consumer died) takes over
/// and writes its own attempt's object. Only the current lease holder
/// records its file.
#[derive(Debug, Clone)]
pub struct ExportHandler {
    pool: Pool,
    storage: Storage,
    options: BuildOptions,
    retention: Duration,
    lease_ttl: Duration,
    /// This process, in each lease it takes (for operators reading a row).
    instance: String,
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
        lease_ttl: Duration,
        max_attempts: u32,
    ) -> Self {
        Self {
            pool,
            storage,
            options,
            retention,
            lease_ttl,
            instance: format!("worker-{}-{}", std::process::id(), Uuid::new_v4().simple()),
            max_attempts,
        }
    }

    async fn run(&self, export_id: Uuid, message: &Incoming) -> Result<(), HandlerError> {
        let attempt = message.attempt();
        let mut client = self.pool.get().await.map_err(HandlerError::unavailable)?;
        let owner = format!("{}/{}", self.instance, message.id());
        // A redelivery means the consumer that had this job is gone: its
        // lease, live or not, belongs to a builder presumed dead.
        let acquired = leases::acquire(
            &mut client,
            export_id,
            &owner,
            self.lease_ttl,
            message.redelivered(),
        )
        .await;
        let (export, lease) = match acquired {
            Ok(Acquired::Run { export, lease }) => (export, lease),
            Ok(Acquired::Finished(export)) => {
                tracing::info!(%export_id, status = %export.status, "export already finished; nothing to do");
                return Ok(());
            }
            Ok(Acquired::Held { owner, .. }) => {
                tracing::info!(%export_id, holder = owner.as_deref().unwrap_or("?"), "export is being built under a live lease; duplicate job acknowledged");
                return Ok(());
            }
            Err(exports::Error::NotFound) => {
                return Err(HandlerError::permanent(format!(
                    "export {export_id} does not exist"
                )));
            }
            Err(e @ exports::Error::Corrupt(_)) => {
                self.fail_unleased(export_id, UNREADABLE).await?;
                return Err(HandlerError::permanent(e));
            }
            Err(e) if e.is_unavailable() => return Err(HandlerError::unavailable(e)),
            Err(e) => return Err(HandlerError::transient(e)),
        };
        tracing::info!(%export_id, attempt, generation = lease.generation, format = export.format.as_str(), "building export");
        let superseded = CancellationToken::new();
        let keeper = tokio::spawn(keep_lease(
            self.pool.clone(),
            lease.clone(),
            self.lease_ttl,
            superseded.clone(),
        ));
        let built = file::build(
            &mut client,
            &self.pool,
            &self.storage,
            &export,
            &lease,
            &superseded,
            &self.options,
        )
        .await;
        keeper.abort();
        match built {
            Ok(written) => {
                match leases::succeed(&mut client, &lease, &written, self.retention).await {
                    Ok(_) => {
                        tracing::info!(%export_id, rows = written.rows, bytes = written.bytes, "export succeeded");
                        Ok(())
                    }
                    Err(exports::Error::LeaseLost { .. }) => {
                        // Another builder owns the export now: this file is
                        // nobody's (its key is this attempt's own).
                        self.discard(&export.object_key).await;
                        tracing::info!(%export_id, generation = lease.generation, "lease lost before recording the file; discarded it");
                        Ok(())
                    }
                    Err(e) => {
                        // The file stays (the sweeper removes it if no
                        // retry records it); the retry starts over.
                        self.release(&lease).await;
                        Err(HandlerError::transient(e))
                    }
                }
            }
            Err(BuildError::Superseded) => {
                tracing::info!(%export_id, generation = lease.generation, "lease taken over mid-file; stopped");
                Ok(())
            }
            Err(error) if attempt < self.max_attempts => {
                // Stays `running`; the retry takes the released lease over.
                self.release(&lease).await;
                Err(HandlerError::transient(error))
            }
            Err(error) => {
                self.fail(&lease, error.user_message()).await?;
                Err(HandlerError::permanent(error))
            }
        }
    }

    /// Marks the export failed (with `export.failed`) while the lease is
    /// this builder's. If even that cannot be written, the job is retried
    /// or dead-lettered, and the sweeper fails the export once its lease
    /// has long run out (ADR 0025), so the user's slot is freed either way.
    async fn fail(&self, lease: &Lease, message: &str) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await.map_err(HandlerError::unavailable)?;
        match leases::fail(&mut client, lease, message, self.retention).await {
            Ok(_) | Err(exports::Error::LeaseLost { .. }) => Ok(()),
            Err(e) => Err(HandlerError::transient(e)),
        }
    }

    /// Fails an export no lease could be taken on (its row is unreadable).
    async fn fail_unleased(&self, export_id: Uuid, message: &str) -> Result<(), HandlerError> {
        let mut client = self.pool.get().await.map_err(HandlerError::unavailable)?;
        match exports::fail(&mut client, export_id, message, self.retention).await {
            Ok(_) | Err(exports::Error::IllegalTransition(_)) => Ok(()),
            Err(e) => Err(HandlerError::transient(e)),
        }
    }

    /// Gives the lease up so the retry need not wait for it to run out;
    /// best effort (it runs out anyway).
    async fn release(&self, lease: &Lease) {
        let released = match self.pool.get().await {
            Ok(client) => leases::release(&client, lease)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = released {
            tracing::debug!(export_id = %lease.export_id, error, "releasing the lease failed; it runs out");
        }
    }

    /// Deletes an object this builder wrote but may not record; best
    /// effort (the sweeper removes what is left).
    async fn discard(&self, key: &str) {
        if let Err(error) = self.storage.delete(key).await {
            tracing::warn!(key, error = %error, "could not delete a superseded export file; the sweeper will");
        }
    }
}

/// Renews `lease` every third of `ttl` until aborted; cancels `superseded`
/// once the lease is found to be someone else's. A renewal that fails (the
/// database is away) is retried at the next tick: the lease may run out
/// meanwhile, and then the fencing in `succeed` decides.
async fn keep_lease(pool: Pool, lease: Lease, ttl: Duration, superseded: CancellationToken) {
    let every = (ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let renewed = match pool.get().await {
            Ok(client) => leases::renew(&client, &lease, ttl)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                superseded.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(export_id = %lease.export_id, error, "renewing the export's lease failed");
            }
        }
    }
}

impl Handler for ExportHandler {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let envelope: Envelope<Job> = message.decode()?;
        match envelope.body {
            Job::ExportRun(run) => self.run(run.export_id, message).await,
            other => Err(HandlerError::permanent(format!(
                "{} is not an export job",
                keel_contracts::MessageBody::message_type(&other)
            ))),
        }
    }
}
