//! The storage side of processing a captured event, for the worker: read
//! it, lock it, record how processing ended.
//!
//! What an event *means* (Shopify orders, Stripe payments) is the worker's
//! business; this module only keeps `webhook_events` truthful:
//!
//! - [`load`] reads an event without locking it, so a handler can do slow
//!   work (a third party's API) before it opens its transaction;
//! - [`lock`] takes the row lock inside the handler's transaction, waiting
//!   at most [`LOCK_TIMEOUT`]: two workers handed the same event (a
//!   redelivery, a replay) never apply it twice, and the second sees the
//!   first's outcome once it gets the lock. A lock wait that times out is
//!   [`ProcessError::is_lock_timeout`], for the caller to retry;
//! - [`finish`] records `processed` or `ignored` in that transaction
//!   ([`finish_with_note`]: with the reason an event was ignored);
//! - [`load_many`], [`lock_many`] and [`finish_many`] do the same for a
//!   batch of events, one statement each (the worker's batches, ADR 0026);
//! - [`record_failure`] counts a failed attempt, keeps its error and, after
//!   the last attempt (or a permanent error), marks the event `failed`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keel_db::{GenericClient, Transaction};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Why reading or recording an event failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error("a stored webhook event has an unknown status {0:?}")]
    UnknownStatus(String),
}

impl ProcessError {
    /// Another worker held the event's lock for longer than [`LOCK_TIMEOUT`]
    /// (SQLSTATE 55P03): worth retrying later.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, ProcessError::Database(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE))
    }
}

impl From<tokio_postgres::Error> for ProcessError {
    fn from(error: tokio_postgres::Error) -> Self {
        ProcessError::Database(error.into())
    }
}

type Result<T, E = ProcessError> = std::result::Result<T, E>;

/// How long [`lock`] waits for another worker holding the same event.
/// Longer than a normal handler takes, short enough that a stuck one does
/// not pin a consumer slot: the waiting delivery is retried instead.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest error text kept in `last_error` (the full chain goes to logs).
pub const MAX_ERROR_LEN: usize = 2000;

/// Where an event is in its life (`webhook_events.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Captured, not applied yet (or failed attempts are being retried).
    Received,
    /// Applied.
    Processed,
    /// Stored only: nothing in Keel acts on this source or topic, or the
    /// handler decided it changes nothing (`last_error` then says why).
    Ignored,
    /// The last attempt failed, or the event can never apply.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Processed => "processed",
            Status::Ignored => "ignored",
            Status::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Status::Received,
            Status::Processed,
            Status::Ignored,
            Status::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// Processing already reached an end that a repeat must not redo: the
    /// job is acknowledged and skipped. `failed` is not one: a requeued or
    /// replayed job is the admin asking for another try.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Processed | Status::Ignored)
    }
}

/// How a successful processing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    Ignored,
}

impl Outcome {
    fn status(self) -> Status {
        match self {
            Outcome::Processed => Status::Processed,
            Outcome::Ignored => Status::Ignored,
        }
    }
}

/// A stored event as processing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: Uuid,
    /// The configured source's name (`/webhooks/{source}`).
    pub source: String,
    pub topic: Option<String>,
    /// The body exactly as received.
    pub body: Vec<u8>,
    pub status: Status,
    /// Attempts recorded so far (successful or not).
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, source, topic, body, status, attempts, last_error, received_at, processed_at";

fn from_row(row: &tokio_postgres::Row) -> Result<StoredEvent> {
    let status: String = row.try_get(4)?;
    Ok(StoredEvent {
        id: row.try_get(0)?,
        source: row.try_get(1)?,
        topic: row.try_get(2)?,
        body: row.try_get(3)?,
        status: Status::parse(&status).ok_or(ProcessError::UnknownStatus(status))?,
        attempts: row.try_get(5)?,
        last_error: row.try_get(6)?,
        received_at: row.try_get(7)?,
        processed_at: row.try_get(8)?,
    })
}

/// The event, without locking it; `None` when no such event exists.
pub async fn load(client: &impl GenericClient, id: Uuid) -> Result<Option<StoredEvent>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE id = $1"
        ))
        .await?;
    client
        .query_opt(&statement, &[&id])
        .await?
        .map(|row| from_row(&row))
        .transpose()
}

/// The event, its row locked until `tx` ends; `None` when no such event
/// exists. Waits at most [`LOCK_TIMEOUT`] for another holder (then an
/// error for which [`ProcessError::is_lock_timeout`] is true). Re-reads the row
/// as committed by that holder, so a status it set is seen here.
pub async fn lock(tx: &Transaction<'_>, id: Uuid) -> Result<Option<StoredEvent>> {
    // SET LOCAL: the timeout ends with the transaction, and the pooled
    // connection goes back with its own setting.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        LOCK_TIMEOUT.as_millis()
    ))
    .await?;
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE id = $1 FOR UPDATE"
        ))
        .await?;
    tx.query_opt(&statement, &[&id])
        .await?
        .map(|row| from_row(&row))
        .transpose()
}

/// Records a successful attempt: the outcome, `processed_at`, one more
/// attempt, no error. Call inside the transaction that applied the event
/// (after [`lock`]), so the outcome commits with the changes it names.
pub async fn finish(tx: &Transaction<'_>, id: Uuid, outcome: Outcome) -> Result<()> {
    finish_noted(tx, id, outcome, None).await
}

/// [`finish`], keeping `note` in `last_error`: why a handler ignored an
/// event it could have applied (an order update older than the stored
/// one), for the admin who lists events. Not an error: the event is done.
pub async fn finish_with_note(
    tx: &Transaction<'_>,
    id: Uuid,
    outcome: Outcome,
    note: &str,
) -> Result<()> {
    finish_noted(tx, id, outcome, Some(truncate(note, MAX_ERROR_LEN))).await
}

async fn finish_noted(
    tx: &Transaction<'_>,
    id: Uuid,
    outcome: Outcome,
    note: Option<&str>,
) -> Result<()> {
    let statement = tx
        .prepare_cached(
            "UPDATE webhook_events \
             SET status = $2, processed_at = now(), attempts = attempts + 1, last_error = $3 \
             WHERE id = $1",
        )
        .await?;
    tx.execute(&statement, &[&id, &outcome.status().as_str(), &note])
        .await?;
    Ok(())
}

/// The events of `ids` that exist, without locking them, in no particular
/// order (one statement for a batch of jobs).
pub async fn load_many(client: &impl GenericClient, ids: &[Uuid]) -> Result<Vec<StoredEvent>> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE id = ANY($1)"
        ))
        .await?;
    client
        .query(&statement, &[&ids])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// The statuses of the events of `ids` that exist, their rows locked until
/// `tx` ends: [`lock`] for a batch, in one statement. Rows are locked in id
/// order, so two batches sharing events wait for each other instead of
/// deadlocking; the same [`LOCK_TIMEOUT`] bounds the wait.
pub async fn lock_many(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<Vec<(Uuid, Status)>> {
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        LOCK_TIMEOUT.as_millis()
    ))
    .await?;
    let statement = tx
        .prepare_cached(
            "SELECT id, status FROM webhook_events WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .await?;
    tx.query(&statement, &[&ids])
        .await?
        .iter()
        .map(|row| {
            let status: String = row.try_get(1)?;
            Ok((
                row.try_get(0)?,
                Status::parse(&status).ok_or(ProcessError::UnknownStatus(status))?,
            ))
        })
        .collect()
}

/// One event's successful end, for [`finish_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub id: Uuid,
    pub outcome: Outcome,
    /// Why an event that could have applied was ignored.
    pub note: Option<String>,
}

/// [`finish`] / [`finish_with_note`] of several events in one statement,
/// inside the transaction that applied them (after [`lock_many`]).
pub async fn finish_many(tx: &Transaction<'_>, finished: &[Finished]) -> Result<()> {
    if finished.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = finished.iter().map(|f| f.id).collect();
    let statuses: Vec<&str> = finished
        .iter()
        .map(|f| f.outcome.status().as_str())
        .collect();
    let notes: Vec<Option<&str>> = finished
        .iter()
        .map(|f| f.note.as_deref().map(|n| truncate(n, MAX_ERROR_LEN)))
        .collect();
    let statement = tx
        .prepare_cached(
            "UPDATE webhook_events e \
             SET status = t.status, processed_at = now(), attempts = e.attempts + 1, last_error = t.note \
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(id, status, note) \
             WHERE e.id = t.id",
        )
        .await?;
    tx.execute(&statement, &[&ids, &statuses, &notes]).await?;
    Ok(())
}

/// Records a failed attempt: one more attempt and its error; when `last`
/// (no retry follows: the last attempt, or a permanent error) the event
/// becomes `failed`. An event already `processed` or `ignored` is left
/// alone: a late failure of a duplicate delivery must not undo the outcome
/// of the one that succeeded. Runs on its own (autocommit), since the
/// attempt's transaction rolled back.
pub async fn record_failure(
    client: &impl GenericClient,
    id: Uuid,
    error: &str,
    last: bool,
) -> Result<()> {
    let statement = client
        .prepare_cached(
            "UPDATE webhook_events \
             SET attempts = attempts + 1, last_error = $2, \
                 status = CASE WHEN $3 THEN 'failed' ELSE status END \
             WHERE id = $1 AND status NOT IN ('processed', 'ignored')",
        )
        .await?;
    client
        .execute(&statement, &[&id, &truncate(error, MAX_ERROR_LEN), &last])
        .await?;
    Ok(())
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_names() {
        for status in [
            Status::Received,
            Status::Processed,
            Status::Ignored,
            Status::Failed,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("done"), None);
    }

    #[test]
    fn only_processed_and_ignored_events_are_skipped() {
        assert!(Status::Processed.is_done());
        assert!(Status::Ignored.is_done());
        assert!(!Status::Received.is_done());
        assert!(!Status::Failed.is_done());
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let text = "é".repeat(10);
        assert_eq!(truncate(&text, 5), "éé");
        assert_eq!(truncate("short", 100), "short");
    }
}
