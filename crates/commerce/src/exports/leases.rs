//! Export leases (ADR 0025): who builds an export's file now, until when,
//! and the fencing that keeps a stale builder from recording its file.
//!
//! A worker [`acquire`]s the lease when a job starts an export and
//! [`renew`]s it while it writes. The lease's generation is the export's
//! `attempts`, bumped by every acquisition: [`succeed`], [`fail`] and
//! [`progress`] apply only while it is still the caller's, so a builder
//! that was presumed dead (paused, partitioned) and came back can no
//! longer overwrite what the builder that took over recorded. Each
//! generation writes its own object ([`Export::attempt_object_key`]).
//!
//! The sweeper's half: [`fail_abandoned`] ends exports whose builder and
//! job are long gone (freeing the user's slot), and [`referenced`] says
//! which stored objects are some export's file.

use std::collections::HashSet;
use std::time::Duration;

use keel_contracts::events::{ExportCompleted, ExportFailed};
use keel_contracts::{DomainEvent, Envelope};
use keel_db::{Client, GenericClient, Transaction};
use uuid::Uuid;

use crate::exports::domain::{Export, ExportStatus};
use crate::exports::error::{Error, Result};
use crate::exports::queries::{COLUMNS, Written, from_row, locked, millis};

/// A builder's hold on an export: attempt `generation`, by `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub export_id: Uuid,
    /// Who holds it (a worker instance and the delivery), for operators.
    pub owner: String,
    /// The export's `attempts` when it was acquired: the fencing token.
    pub generation: i32,
}

/// What [`acquire`] found.
#[derive(Debug, Clone)]
pub enum Acquired {
    /// The caller holds the lease: build the file under
    /// `export.object_key` (this attempt's own key).
    Run { export: Export, lease: Lease },
    /// Another builder holds a live lease: this job is a duplicate.
    Held {
        export: Export,
        owner: Option<String>,
    },
    /// Already succeeded, failed or expired: nothing to build.
    Finished(Export),
}

/// Takes the export's lease for `ttl`: from queued, from running when the
/// lease has expired (its builder died or stalled), or from a live lease
/// when `take_over_live` (the broker redelivered this very job because
/// the consumer that had it is gone). Bumps `attempts` (the fencing token),
/// resets progress and points `object_key` at the new attempt's object.
pub async fn acquire(
    client: &mut Client,
    id: Uuid,
    owner: &str,
    ttl: Duration,
    take_over_live: bool,
) -> Result<Acquired> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let current = locked(&tx, id).await?;
    if current.status.is_finished() {
        tx.commit().await.map_err(keel_db::Error::from)?;
        return Ok(Acquired::Finished(current));
    }
    let holder = tx
        .query_one(
            "SELECT lease_owner, coalesce(lease_expires_at > now(), false) FROM exports WHERE id = $1",
            &[&id],
        )
        .await?;
    let owner_now: Option<String> = holder.try_get(0)?;
    let live: bool = holder.try_get(1)?;
    if current.status == ExportStatus::Running && live && !take_over_live {
        tx.commit().await.map_err(keel_db::Error::from)?;
        return Ok(Acquired::Held {
            export: current,
            owner: owner_now,
        });
    }
    current.status.transition_to(ExportStatus::Running)?;
    let generation = current.attempts + 1;
    let object_key = current.attempt_object_key(generation);
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'running', attempts = $2, rows_written = 0, \
                     started_at = now(), updated_at = now(), object_key = $3, lease_owner = $4, \
                     lease_expires_at = now() + $5::bigint * interval '1 millisecond' \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &generation, &object_key, &owner, &millis(ttl)],
        )
        .await?;
    let export = from_row(&row)?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(Acquired::Run {
        export,
        lease: Lease {
            export_id: id,
            owner: owner.to_owned(),
            generation,
        },
    })
}

/// Extends the lease to `ttl` from now; `false` when it is not the
/// caller's any more (taken over, or the export finished): stop building.
pub async fn renew(client: &impl GenericClient, lease: &Lease, ttl: Duration) -> Result<bool> {
    let renewed = client
        .execute(
            "UPDATE exports SET lease_expires_at = now() + $3::bigint * interval '1 millisecond' \
             WHERE id = $1 AND attempts = $2 AND status = 'running'",
            &[&lease.export_id, &lease.generation, &millis(ttl)],
        )
        .await?;
    Ok(renewed == 1)
}

/// Records progress while the lease is the caller's (a no-op otherwise).
pub async fn progress(client: &impl GenericClient, lease: &Lease, rows_written: i64) -> Result<()> {
    let statement = client
        .prepare_cached(
            "UPDATE exports SET rows_written = $3, updated_at = now() \
             WHERE id = $1 AND attempts = $2 AND status = 'running'",
        )
        .await?;
    client
        .execute(
            &statement,
            &[&lease.export_id, &lease.generation, &rows_written],
        )
        .await?;
    Ok(())
}

/// Gives the lease up at once (the attempt failed and a retry is coming):
/// the retry takes over without waiting for the lease to run out.
pub async fn release(client: &impl GenericClient, lease: &Lease) -> Result<()> {
    client
        .execute(
            "UPDATE exports SET lease_expires_at = now() \
             WHERE id = $1 AND attempts = $2 AND status = 'running'",
            &[&lease.export_id, &lease.generation],
        )
        .await?;
    Ok(())
}

/// The locked export, if `lease` is still its current one.
async fn fenced(tx: &Transaction<'_>, lease: &Lease) -> Result<Export> {
    let current = locked(tx, lease.export_id).await?;
    if current.status != ExportStatus::Running || current.attempts != lease.generation {
        return Err(Error::LeaseLost {
            generation: lease.generation,
        });
    }
    Ok(current)
}

/// Marks the export succeeded with this attempt's file, kept for
/// `retention`, with `export.completed` in the same transaction — only
/// while `lease` is current ([`Error::LeaseLost`] otherwise: the caller's
/// object is nobody's file and should be deleted).
pub async fn succeed(
    client: &mut Client,
    lease: &Lease,
    written: &Written,
    retention: Duration,
) -> Result<Export> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    fenced(&tx, lease).await?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'succeeded', rows_written = $2, bytes = $3, sha256 = $4, \
                     error = NULL, finished_at = now(), expires_at = now() + $5::bigint * interval '1 millisecond', \
                     lease_expires_at = NULL, updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[
                &lease.export_id,
                &written.rows,
                &written.bytes,
                &written.sha256,
                &millis(retention),
            ],
        )
        .await?;
    let export = from_row(&row)?;
    let event = DomainEvent::ExportCompleted(ExportCompleted {
        export_id: export.id,
        user_id: export.user_id,
        rows_written: export.rows_written,
        bytes: export.bytes,
    });
    keel_outbox::enqueue_event(&tx, &Envelope::new(event)).await?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(export)
}

/// Marks the export failed with `error` (for the user) and writes
/// `export.failed`, only while `lease` is current ([`Error::LeaseLost`]
/// otherwise: the builder that took over decides).
pub async fn fail(
    client: &mut Client,
    lease: &Lease,
    error: &str,
    retention: Duration,
) -> Result<Export> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    fenced(&tx, lease).await?;
    let export = mark_failed(&tx, lease.export_id, error, retention).await?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(export)
}

async fn mark_failed(
    tx: &Transaction<'_>,
    id: Uuid,
    error: &str,
    retention: Duration,
) -> Result<Export> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'failed', error = $2, finished_at = now(), \
                     expires_at = now() + $3::bigint * interval '1 millisecond', \
                     lease_expires_at = NULL, updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &error, &millis(retention)],
        )
        .await?;
    let export = from_row(&row)?;
    let event = DomainEvent::ExportFailed(ExportFailed {
        export_id: export.id,
        user_id: export.user_id,
        error: error.to_owned(),
    });
    keel_outbox::enqueue_event(tx, &Envelope::new(event)).await?;
    Ok(export)
}

/// What the user reads about an export the sweeper ended while running.
pub const ABANDONED_RUNNING: &str =
    "The export stopped before it finished and could not be resumed; please request it again.";
/// ... and about one that never started.
pub const ABANDONED_QUEUED: &str = "The export could not be started; please request it again.";

/// Fails (with `export.failed`, freeing the user's slot) up to `limit`
/// unfinished exports nobody has worked on for `abandoned_after`: running
/// ones whose lease ran out that long ago (the builder died and its job is
/// gone — dead-lettered, or its failure could not be recorded), queued
/// ones created that long ago whose job never ran. Rows another sweeper
/// or a builder holds locked are skipped.
pub async fn fail_abandoned(
    client: &mut Client,
    abandoned_after: Duration,
    retention: Duration,
    limit: i64,
) -> Result<Vec<Export>> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM exports \
                 WHERE status IN ('queued', 'running') \
                   AND coalesce(lease_expires_at, started_at, created_at) \
                       < now() - $1::bigint * interval '1 millisecond' \
                 ORDER BY coalesce(lease_expires_at, started_at, created_at) \
                 LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&millis(abandoned_after), &limit],
        )
        .await?;
    let mut failed = Vec::with_capacity(rows.len());
    for row in &rows {
        let export = from_row(row)?;
        let message = match export.status {
            ExportStatus::Queued => ABANDONED_QUEUED,
            _ => ABANDONED_RUNNING,
        };
        failed.push(mark_failed(&tx, export.id, message, retention).await?);
    }
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(failed)
}

/// Which of `keys` are the file of an export that is not expired: the
/// objects the sweeper must keep.
pub async fn referenced(client: &impl GenericClient, keys: &[String]) -> Result<HashSet<String>> {
    let rows = client
        .query(
            "SELECT object_key FROM exports WHERE object_key = ANY($1) AND status <> 'expired'",
            &[&keys],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(Error::from))
        .collect()
}
