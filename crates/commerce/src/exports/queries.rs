//! Export queries. The final status and its event (`export.completed`,
//! `export.failed`) commit together; so do a new export and its
//! `export.run` job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_contracts::events::{ExportCompleted, ExportFailed};
use keel_contracts::jobs::ExportRun;
use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::page::{Cursor, Filter, Keyset, Page, PageRequest};
use keel_db::{Client, GenericClient, Transaction};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::exports::domain::{
    Compression, Export, ExportFilter, ExportStatus, Format, NewExport, Resource,
};
use crate::exports::error::{Error, Result};
use crate::orders::domain::Scope;

pub(crate) const COLUMNS: &str = "id, user_id, all_orders, resource, format, compression, filter, status, \
    rows_written, bytes, sha256, error, object_key, attempts, created_at, started_at, \
    finished_at, expires_at, updated_at";

pub(crate) fn from_row(row: &Row) -> Result<Export> {
    let corrupt = |what: &str, value: &str| Error::Corrupt(format!("{what} {value}"));
    let resource: String = row.try_get(3)?;
    let format: String = row.try_get(4)?;
    let compression: String = row.try_get(5)?;
    let filter: serde_json::Value = row.try_get(6)?;
    let status: String = row.try_get(7)?;
    Ok(Export {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        all_orders: row.try_get(2)?,
        resource: Resource::parse(&resource).map_err(|_| corrupt("resource", &resource))?,
        format: Format::parse(&format).map_err(|_| corrupt("format", &format))?,
        compression: Compression::parse(&compression)
            .map_err(|_| corrupt("compression", &compression))?,
        filter: serde_json::from_value::<ExportFilter>(filter)
            .map_err(|e| Error::Corrupt(format!("filter: {e}")))?,
        status: ExportStatus::parse(&status).map_err(|_| corrupt("status", &status))?,
        rows_written: row.try_get(8)?,
        bytes: row.try_get(9)?,
        sha256: row.try_get(10)?,
        error: row.try_get(11)?,
        object_key: row.try_get(12)?,
        attempts: row.try_get(13)?,
        created_at: row.try_get(14)?,
        started_at: row.try_get(15)?,
        finished_at: row.try_get(16)?,
        expires_at: row.try_get(17)?,
        updated_at: row.try_get(18)?,
    })
}

/// Inserts a queued export and its `export.run` job in one transaction,
/// unless the user already has `max_active` exports queued or running
/// ([`Error::TooManyActive`]).
///
/// The count and the insert run under a per-user transaction-level
/// advisory lock: two concurrent requests cannot both see room for one.
pub async fn create(client: &mut Client, new: &NewExport, max_active: u32) -> Result<Export> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('keel.exports.' || $1::uuid::text, 0))",
        &[&new.user_id],
    )
    .await?;
    let active: i64 = tx
        .query_one(
            "SELECT count(*) FROM exports WHERE user_id = $1 AND status IN ('queued', 'running')",
            &[&new.user_id],
        )
        .await?
        .try_get(0)?;
    if active >= i64::from(max_active) {
        return Err(Error::TooManyActive { limit: max_active });
    }
    let id = Uuid::now_v7();
    let object_key = Export::object_key_for(id, new.user_id, new.format, new.compression);
    let filter =
        serde_json::to_value(&new.filter).map_err(|e| Error::Corrupt(format!("filter: {e}")))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO exports (id, user_id, all_orders, resource, format, compression, filter, status, object_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8) RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &new.user_id,
                &new.all_orders,
                &new.resource.as_str(),
                &new.format.as_str(),
                &new.compression.as_str(),
                &filter,
                &object_key,
            ],
        )
        .await?;
    let export = from_row(&row)?;
    keel_outbox::enqueue_job(
        &tx,
        &Envelope::new(Job::ExportRun(ExportRun { export_id: id })),
    )
    .await?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(export)
}

/// One export, if `scope` may see it ([`Error::NotFound`] otherwise).
pub async fn get(client: &impl GenericClient, id: Uuid, scope: Scope) -> Result<Export> {
    let row = match scope {
        Scope::All => {
            let statement = client
                .prepare_cached(&format!("SELECT {COLUMNS} FROM exports WHERE id = $1"))
                .await?;
            client.query_opt(&statement, &[&id]).await?
        }
        Scope::User(user) => {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM exports WHERE id = $1 AND user_id = $2"
                ))
                .await?;
            client.query_opt(&statement, &[&id, &user]).await?
        }
    };
    from_row(&row.ok_or(Error::NotFound)?)
}

/// A user's exports, newest first, keyset-paginated on `(created_at, id)`.
pub async fn list(
    client: &impl GenericClient,
    user_id: Uuid,
    page: PageRequest,
) -> Result<Page<Export>> {
    let keyset = Keyset {
        select: &format!("SELECT {COLUMNS} FROM exports"),
        time: "created_at",
        id: "id",
    };
    let filter = Filter::new().and("user_id", "=", user_id);
    keyset
        .fetch(client, filter, page, from_row, |e| {
            Cursor::new(e.created_at, e.id)
        })
        .await
}

/// What [`start`] found.
#[derive(Debug, Clone)]
pub enum Start {
    /// Now running (again, after a redelivery): build the file.
    Run(Export),
    /// Already succeeded, failed or expired: nothing to build.
    Finished(Export),
}

/// Marks the export running for a new attempt (from queued, or from running
/// when a job is redelivered after a worker died), resetting its progress.
/// A finished export is returned as is: it is never rebuilt.
pub async fn start(client: &mut Client, id: Uuid) -> Result<Start> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let current = locked(&tx, id).await?;
    if current.status.is_finished() {
        tx.commit().await.map_err(keel_db::Error::from)?;
        return Ok(Start::Finished(current));
    }
    current.status.transition_to(ExportStatus::Running)?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'running', attempts = attempts + 1, rows_written = 0, \
                     started_at = now(), updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id],
        )
        .await?;
    let export = from_row(&row)?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(Start::Run(export))
}

/// Records progress of a running export (a no-op once it has finished).
pub async fn progress(client: &impl GenericClient, id: Uuid, rows_written: i64) -> Result<()> {
    let statement = client
        .prepare_cached(
            "UPDATE exports SET rows_written = $2, updated_at = now() \
             WHERE id = $1 AND status = 'running'",
        )
        .await?;
    client.execute(&statement, &[&id, &rows_written]).await?;
    Ok(())
}

/// What a finished file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows: i64,
    pub bytes: i64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
}

/// Marks a running export succeeded, kept for `retention`, and writes
/// `export.completed` in the same transaction. Succeeding twice (a
/// redelivered job that raced) returns the stored result unchanged.
pub async fn succeed(
    client: &mut Client,
    id: Uuid,
    written: &Written,
    retention: Duration,
) -> Result<Export> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let current = locked(&tx, id).await?;
    if current.status == ExportStatus::Succeeded {
        tx.commit().await.map_err(keel_db::Error::from)?;
        return Ok(current);
    }
    current.status.transition_to(ExportStatus::Succeeded)?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'succeeded', rows_written = $2, bytes = $3, sha256 = $4, \
                     error = NULL, finished_at = now(), expires_at = now() + $5::bigint * interval '1 millisecond', \
                     updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &written.rows, &written.bytes, &written.sha256, &millis(retention)],
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

/// Marks a queued or running export failed with `error` (written for the
/// user), kept for `retention`, and writes `export.failed` in the same
/// transaction. Failing a failed export returns it unchanged; a succeeded
/// one is an [`Error::IllegalTransition`].
pub async fn fail(
    client: &mut Client,
    id: Uuid,
    error: &str,
    retention: Duration,
) -> Result<Export> {
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let current = locked(&tx, id).await?;
    if current.status == ExportStatus::Failed {
        tx.commit().await.map_err(keel_db::Error::from)?;
        return Ok(current);
    }
    current.status.transition_to(ExportStatus::Failed)?;
    let row = tx
        .query_one(
            &format!(
                "UPDATE exports SET status = 'failed', error = $2, finished_at = now(), \
                     expires_at = now() + $3::bigint * interval '1 millisecond', updated_at = now() \
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
    keel_outbox::enqueue_event(&tx, &Envelope::new(event)).await?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    Ok(export)
}

/// Finished exports whose retention ended by `now`, oldest first: the
/// worker removes their files, then [`mark_expired`]s them.
pub async fn expiring(
    client: &impl GenericClient,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Export>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM exports \
                 WHERE status IN ('succeeded', 'failed') AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2"
            ),
            &[&now, &limit],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Marks a finished export expired (its file is gone); `false` when it was
/// not succeeded or failed any more.
pub async fn mark_expired(client: &impl GenericClient, id: Uuid) -> Result<bool> {
    let updated = client
        .execute(
            "UPDATE exports SET status = 'expired', updated_at = now() \
             WHERE id = $1 AND status IN ('succeeded', 'failed')",
            &[&id],
        )
        .await?;
    Ok(updated == 1)
}

/// A user's exports that succeeded or failed after `after`, in order of
/// `(finished_at, id)`: what a reconnecting Server-Sent Events client missed.
pub async fn finished_since(
    client: &impl GenericClient,
    user_id: Uuid,
    after: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Export>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM exports \
             WHERE user_id = $1 AND finished_at > $2 AND status IN ('succeeded', 'failed') \
             ORDER BY finished_at, id LIMIT $3"
        ))
        .await?;
    let rows = client
        .query(&statement, &[&user_id, &after, &limit])
        .await?;
    rows.iter().map(from_row).collect()
}

/// The export's row, locked until the transaction ends.
pub(crate) async fn locked(tx: &Transaction<'_>, id: Uuid) -> Result<Export> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM exports WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?;
    from_row(&row.ok_or(Error::NotFound)?)
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
