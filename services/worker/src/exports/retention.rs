//! The exports sweeper, on a schedule: retention (finished exports past
//! `expires_at` lose their file and become `expired`), abandoned exports
//! (failed once nobody has worked on them for `exports.abandoned_after`,
//! freeing the user's slot) and orphans (staging files of killed uploads,
//! and objects no export refers to, once untouched for
//! `exports.orphaned_after`). ADR 0012 and ADR 0025.

use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
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

/// Fails every export nobody has worked on for `abandoned_after` (see
/// [`keel_commerce::exports::leases::fail_abandoned`]), each with
/// `export.failed` and a sentence for the user; returns how many.
pub async fn fail_abandoned(
    pool: &Pool,
    abandoned_after: Duration,
    retention: Duration,
) -> Result<usize, SweepError> {
    let mut client = pool.get().await.map_err(keel_db::Error::from)?;
    let mut failed = 0;
    loop {
        let batch = keel_commerce::exports::leases::fail_abandoned(
            &mut client,
            abandoned_after,
            retention,
            BATCH,
        )
        .await?;
        for export in &batch {
            tracing::warn!(export_id = %export.id, user_id = %export.user_id, attempts = export.attempts, "abandoned export failed by the sweeper");
        }
        failed += batch.len();
        if (batch.len() as i64) < BATCH {
            return Ok(failed);
        }
    }
}

/// What one orphan sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Staging files of uploads that stopped.
    pub staging: usize,
    /// Complete objects under `exports/` that no export refers to (a
    /// superseded builder's file it could not delete, a file written just
    /// before its builder died).
    pub objects: usize,
}

/// Removes staging files and unreferenced objects untouched for
/// `orphaned_after`. Younger ones are left: an upload in progress, or a
/// file finished a moment before its export records it.
pub async fn remove_orphans(
    pool: &Pool,
    storage: &Storage,
    orphaned_after: Duration,
) -> Result<Orphans, SweepError> {
    let staging = storage.remove_stale_staging(orphaned_after).await?;
    let cutoff =
        Utc::now() - chrono::Duration::from_std(orphaned_after).unwrap_or(chrono::Duration::MAX);
    let client = pool.get().await.map_err(keel_db::Error::from)?;
    let mut listing = storage.list("exports");
    let mut candidates = Vec::new();
    let mut objects = 0;
    while let Some(object) = listing.try_next().await? {
        if object.last_modified < cutoff {
            candidates.push(object.key);
        }
        if candidates.len() >= BATCH as usize {
            objects += delete_unreferenced(&client, storage, &mut candidates).await?;
        }
    }
    objects += delete_unreferenced(&client, storage, &mut candidates).await?;
    Ok(Orphans { staging, objects })
}

async fn delete_unreferenced(
    client: &keel_db::Client,
    storage: &Storage,
    candidates: &mut Vec<String>,
) -> Result<usize, SweepError> {
    if candidates.is_empty() {
        return Ok(0);
    }
    let keep = keel_commerce::exports::leases::referenced(client, candidates).await?;
    let mut deleted = 0;
    for key in candidates.drain(..) {
        if !keep.contains(&key) {
            storage.delete(&key).await?;
            tracing::info!(key, "orphaned export object removed");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// How the sweeper runs.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub interval: Duration,
    pub retention: Duration,
    pub abandoned_after: Duration,
    pub orphaned_after: Duration,
}

/// Sweeps every `settings.interval` until `shutdown`.
pub async fn run(
    pool: Pool,
    storage: Storage,
    settings: SweepSettings,
    shutdown: CancellationToken,
) {
    loop {
        match sweep_once(&pool, &storage).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired exports removed"),
            Err(e) => tracing::warn!(error = %e, "export retention sweep failed; retrying later"),
        }
        match fail_abandoned(&pool, settings.abandoned_after, settings.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(failed = n, "abandoned exports failed"),
            Err(e) => tracing::warn!(error = %e, "abandoned export sweep failed; retrying later"),
        }
        match remove_orphans(&pool, &storage, settings.orphaned_after).await {
            Ok(Orphans {
                staging: 0,
                objects: 0,
            }) => {}
            Ok(Orphans { staging, objects }) => {
                tracing::info!(staging, objects, "orphaned export files removed");
            }
            Err(e) => tracing::warn!(error = %e, "orphan sweep failed; retrying later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}
