//! Reading the archive: a newest-first page, one dead letter.

use chrono::{DateTime, Utc};
use keel_db::GenericClient;
use keel_db::page::{Cursor, Filter, Keyset, Page, PageRequest};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeadLetterStatus))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for an admin.
    Dead,
    /// Sent back to its queue (as a new message, `requeued_as`).
    Requeued,
}

impl Status {
    pub const ALL: [Status; 2] = [Status::Dead, Status::Requeued];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Dead => "dead",
            Status::Requeued => "requeued",
        }
    }

    /// Parses the stored (and query-string) form.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A dead letter without its body and headers (the listing's item).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(
        as = DeadLetterSummary,
        description = "A message no consumer could handle, archived from the dead queue."
    )
)]
pub struct DeadLetter {
    /// The message's id (its envelope id).
    pub id: Uuid,
    /// `webhook.process`, `export.run`, an event type; empty when unknown.
    pub message_type: String,
    /// The key it was first published with.
    pub routing_key: String,
    /// `retries-exhausted`, `permanent`, `undecodable`, `broker:<reason>`.
    pub death_reason: String,
    pub last_error: Option<String>,
    /// Handler attempts in its last life.
    pub attempts: i32,
    /// The queue it died in.
    pub queue: Option<String>,
    pub dead_at: DateTime<Utc>,
    /// How often it died (a requeued message that dies again counts here).
    pub deaths: i32,
    pub status: Status,
    pub requeued_at: Option<DateTime<Utc>>,
    /// The admin who requeued it.
    pub requeued_by: Option<Uuid>,
    /// The id of the message the requeue sent.
    pub requeued_as: Option<Uuid>,
}

/// A dead letter with what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    pub letter: DeadLetter,
    /// The AMQP headers, as JSON.
    pub headers: serde_json::Value,
    /// The body as it was on the bus.
    pub body: Vec<u8>,
}

/// Filters and position of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub message_type: Option<String>,
    /// After this position (`dead_at`, `id`), newest first.
    pub page: PageRequest,
}

const COLUMNS: &str = "id, message_type, routing_key, death_reason, last_error, attempts, \
    queue, dead_at, deaths, status, requeued_at, requeued_by, requeued_as";

fn from_row(row: &Row) -> Result<DeadLetter> {
    let status: String = row.try_get(9)?;
    Ok(DeadLetter {
        id: row.try_get(0)?,
        message_type: row.try_get(1)?,
        routing_key: row.try_get(2)?,
        death_reason: row.try_get(3)?,
        last_error: row.try_get(4)?,
        attempts: row.try_get(5)?,
        queue: row.try_get(6)?,
        dead_at: row.try_get(7)?,
        deaths: row.try_get(8)?,
        status: Status::parse(&status).ok_or_else(|| Error::Corrupt(format!("status {status}")))?,
        requeued_at: row.try_get(10)?,
        requeued_by: row.try_get(11)?,
        requeued_as: row.try_get(12)?,
    })
}

/// Newest deaths first, optionally filtered by status and message type.
pub async fn list(client: &impl GenericClient, query: &ListQuery) -> Result<Page<DeadLetter>> {
    let keyset = Keyset {
        select: &format!("SELECT {COLUMNS} FROM dead_letters"),
        time: "dead_at",
        id: "id",
    };
    let filter = Filter::new()
        .and_some("status", "=", query.status.map(Status::as_str))
        .and_some("message_type", "=", query.message_type.clone());
    keyset
        .fetch(client, filter, query.page, from_row, |l| {
            Cursor::new(l.dead_at, l.id)
        })
        .await
}

/// One dead letter with its headers and body.
pub async fn get(client: &impl GenericClient, id: Uuid) -> Result<Option<StoredDeadLetter>> {
    let sql = format!("SELECT {COLUMNS}, headers, body FROM dead_letters WHERE id = $1");
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    Ok(Some(StoredDeadLetter {
        letter: from_row(&row)?,
        headers: row.try_get(13)?,
        body: row.try_get(14)?,
    }))
}
