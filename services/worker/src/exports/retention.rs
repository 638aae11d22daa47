//! Retention: finished exports past `expires_at` lose their file and become
//! `expired`, on a schedule.

use std::time::Duration;

use chrono::Utc;
use keel_db::Pool;
use keel_files::Storage;
use tokio_util::sync::CancellationToken;

/// Exports handled per query; the sweep repeats until none are left.
const BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] keel_commerce::exports::Error),
    #[error(transparent)]
    Storage(#[from] keel_files::Error),
    #[error(transparent)]
    Pool(#[from] keel_db::Error),
}

/// Removes every export due by now; returns how many were expired.
///
/// The file goes first, then the status: a crash in between leaves the
/// export due, and the next sweep deletes the (already missing) file again
/// and marks it. Several workers may sweep at once: deleting twice is
/// harmless and only one marks each export.
pub async fn sweep_once(pool: &Pool, storage: &Storage) -> Result<usize, SweepError> {
    let client = pool.get().await.map_err(keel_db::Error::from)?;
    let mut expired = 0;
    loop {
        let due = keel_commerce::exports::expiring(&client, Utc::now(), BATCH).await?;
        for export in &due {
            storage.delete(&export.object_key).await?;
            if keel_commerce::exports::mark_expired(&client, export.id).await? {
                expired += 1;
            }
        }
        if (due.len() as i64) < BATCH {
            return Ok(expired);
        }
    }
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run(pool: Pool, storage: Storage, interval: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_once(&pool, &storage).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired exports removed"),
            Err(e) => tracing::warn!(error = %e, "export retention sweep failed; retrying later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
