//! The admin's view of captured events: a newest-first listing with
//! attempts and last error, one event with its headers and raw body, and
//! replay (back to `received`, a new `webhook.process` job).

use chrono::{DateTime, Utc};
use keel_contracts::jobs::WebhookProcess;
use keel_contracts::{Envelope, Job};
use keel_db::page::{Cursor, Filter, Keyset, Page, PageRequest};
use keel_db::{GenericClient, Transaction};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::headers::REDACTED;
use crate::scheme::Scheme;

const SCHEMES: [Scheme; 4] = [
    Scheme::Shopify,
    Scheme::Github,
    Scheme::Stripe,
    Scheme::Standard,
];

/// The values of `webhook_events.status` (the table's CHECK constraint),
/// in the order an event usually goes through them.
pub const STATUSES: [&str; 4] = ["received", "processed", "ignored", "failed"];

/// `value` if it is one of [`STATUSES`].
pub fn parse_status(value: &str) -> Option<&'static str> {
    STATUSES.into_iter().find(|s| *s == value)
}

// `STATUSES` for the API document; a test keeps the two equal.
/// Where a captured delivery stands.
#[cfg(feature = "openapi")]
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEventStatus)]
#[serde(rename_all = "lowercase")]
pub enum StatusSchema {
    Received,
    Processed,
    Ignored,
    Failed,
}

/// An event without its body and headers (the listing's item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = WebhookEventSummary, description = "A captured delivery, without its body and headers.")
)]
pub struct EventSummary {
    pub id: Uuid,
    /// The configured source (`/webhooks/{source}`).
    pub source: String,
    pub topic: Option<String>,
    /// The sender's id of the delivery.
    pub delivery_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = StatusSchema))]
    pub status: String,
    /// Processing attempts over the event's whole life (replays included).
    pub attempts: i32,
    /// The most recent failure; cleared by a successful attempt.
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// An event with what was captured of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetail {
    pub summary: EventSummary,
    /// The stored header selection (signatures already `[redacted]` at
    /// capture, `Authorization` and cookies never stored).
    pub headers: serde_json::Value,
    /// The body exactly as received.
    pub body: Vec<u8>,
}

/// Filters and position of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// One of [`STATUSES`].
    pub status: Option<&'static str>,
    pub source: Option<String>,
    /// After this position (`received_at`, `id`), newest first.
    pub page: PageRequest,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub event_id: Uuid,
    /// The id of the `webhook.process` message enqueued.
    pub job_id: Uuid,
}

const COLUMNS: &str = "id, source, topic, delivery_id, status, attempts, last_error, \
    received_at, processed_at";

fn from_row(row: &Row) -> Result<EventSummary> {
    Ok(EventSummary {
        id: row.try_get(0)?,
        source: row.try_get(1)?,
        topic: row.try_get(2)?,
        delivery_id: row.try_get(3)?,
        status: row.try_get(4)?,
        attempts: row.try_get(5)?,
        last_error: row.try_get(6)?,
        received_at: row.try_get(7)?,
        processed_at: row.try_get(8)?,
    })
}

/// Newest first, optionally filtered by status and source.
pub async fn list(client: &impl GenericClient, query: &ListQuery) -> Result<Page<EventSummary>> {
    let keyset = Keyset {
        select: &format!("SELECT {COLUMNS} FROM webhook_events"),
        time: "received_at",
        id: "id",
    };
    let filter = Filter::new()
        .and_some("status", "=", query.status)
        .and_some("source", "=", query.source.clone());
    keyset
        .fetch(client, filter, query.page, from_row, |e| {
            Cursor::new(e.received_at, e.id)
        })
        .await
}

/// One event with its headers and body; `None` when there is none.
pub async fn get(client: &impl GenericClient, id: Uuid) -> Result<Option<EventDetail>> {
    let sql = format!("SELECT {COLUMNS}, headers, body FROM webhook_events WHERE id = $1");
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    Ok(Some(EventDetail {
        summary: from_row(&row)?,
        headers: redacted(row.try_get(9)?),
        body: row.try_get(10)?,
    }))
}

/// The stored headers with every scheme's signature headers redacted and
/// credentials dropped, again: capture already did so, and this keeps a row
/// written by anything else (an older version, a manual insert) from
/// showing a signature to an admin screen.
fn redacted(headers: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(mut map) = headers else {
        return serde_json::Value::Object(serde_json::Map::new());
    };
    map.retain(|name, _| !matches!(name.as_str(), "authorization" | "cookie" | "set-cookie"));
    for (name, value) in map.iter_mut() {
        if SCHEMES.iter().any(|s| s.is_signature_header(name)) {
            *value = serde_json::Value::String(REDACTED.to_owned());
        }
    }
    serde_json::Value::Object(map)
}

/// Sends event `id` through processing again, in the caller's transaction:
/// the event goes back to `received` (its `processed_at` cleared) and a new
/// `webhook.process` job is enqueued through the outbox. `None` when there
/// is no such event.
///
/// `attempts` and `last_error` stay: attempts count every processing try
/// over the event's life, and the last error explains why it was replayed
/// until the replayed attempt succeeds (which clears it) or fails (which
/// replaces it). The worker skips only `processed` and `ignored` events, so
/// going back to `received` is what lets a processed event apply again —
/// handlers are idempotent upserts, so applying twice converges.
pub async fn replay(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Replayed>> {
    let reset = tx
        .execute(
            "UPDATE webhook_events SET status = 'received', processed_at = NULL WHERE id = $1",
            &[&id],
        )
        .await?;
    if reset == 0 {
        return Ok(None);
    }
    // A new envelope: consumers de-duplicate by message id, and the first
    // job's id may be recorded as handled already.
    let job = Envelope::new(Job::WebhookProcess(WebhookProcess { event_id: id }));
    keel_outbox::enqueue_job(tx, &job).await?;
    Ok(Some(Replayed {
        event_id: id,
        job_id: job.id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tables_statuses_parse() {
        for status in STATUSES {
            assert_eq!(parse_status(status), Some(status));
        }
        assert_eq!(parse_status("done"), None);
        assert_eq!(parse_status("Received"), None);
    }

    #[test]
    fn signatures_and_credentials_never_leave_through_the_admin_view() {
        let stored = serde_json::json!({
            "x-shopify-hmac-sha256": "c2lnbmF0dXJl",
            "x-hub-signature": "sha1=abc",
            "stripe-signature": "t=1,v1=abc",
            "webhook-signature": "v1,abc",
            "authorization": "Bearer x",
            "x-shopify-topic": "orders/create",
        });
        let shown = redacted(stored);
        assert_eq!(shown["x-shopify-hmac-sha256"], REDACTED);
        assert_eq!(shown["x-hub-signature"], REDACTED);
        assert_eq!(shown["stripe-signature"], REDACTED);
        assert_eq!(shown["webhook-signature"], REDACTED);
        assert!(shown.get("authorization").is_none());
        assert_eq!(shown["x-shopify-topic"], "orders/create");
    }
}

#[cfg(all(test, feature = "openapi"))]
mod schema_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_documented_webhook_event_statuses_are_the_stored_ones() {
        use StatusSchema::*;
        let documented: Vec<String> = [Received, Processed, Ignored, Failed]
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(documented, STATUSES);
    }
}
