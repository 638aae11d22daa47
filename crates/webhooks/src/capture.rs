//! Capturing a verified delivery: the event row, its job and its domain
//! event, committed together or not at all.

use keel_contracts::events::WebhookReceived;
use keel_contracts::jobs::WebhookProcess;
use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::GenericClient;
use keel_outbox::OutboxRow;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A verified delivery, ready to store.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub source: &'a str,
    pub topic: Option<&'a str>,
    pub delivery_id: &'a str,
    /// Exactly as received.
    pub body: &'a [u8],
    /// From [`crate::headers::stored_headers`] (signatures redacted).
    pub headers: &'a serde_json::Value,
}

/// What [`capture`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Captured {
    /// Stored as a new event, with its job and `webhook.received` queued.
    Stored(Uuid),
    /// This source already delivered this id: nothing was written; the id
    /// is the event stored the first time.
    Duplicate(Uuid),
}

impl Captured {
    pub fn event_id(self) -> Uuid {
        match self {
            Captured::Stored(id) | Captured::Duplicate(id) => id,
        }
    }

    pub fn is_duplicate(self) -> bool {
        matches!(self, Captured::Duplicate(_))
    }
}

/// Stores `event` with its `webhook.process` job and `webhook.received`
/// event in the outbox, in one statement: atomic on its own (pass a pooled
/// client), or part of the caller's transaction if given one.
///
/// The outbox rows are inserted from the event insert's `RETURNING`, so a
/// redelivery (`ON CONFLICT DO NOTHING` returns nothing) writes no outbox
/// row either; only then does a second statement read the first event's id.
/// One statement in autocommit is one round trip for the whole capture,
/// commit included — that, and PostgreSQL's group commit, is ingest's
/// throughput.
///
/// The rows carry no NOTIFY: PostgreSQL serialises the commits of notifying
/// transactions (across their WAL flush), which would undo group commit.
/// After a [`Captured::Stored`], call [`keel_outbox::wake_relays`]
/// (coalesced across requests, as the gateway does) or let the relay's poll
/// find the rows.
pub async fn capture(client: &impl GenericClient, event: &NewEvent<'_>) -> Result<Captured> {
    let event_id = Uuid::now_v7();
    let job = OutboxRow::job(&Envelope::new(Job::WebhookProcess(WebhookProcess {
        event_id,
    })))?;
    let received = OutboxRow::event(&Envelope::new(DomainEvent::WebhookReceived(
        WebhookReceived {
            event_id,
            source: event.source.to_owned(),
            topic: event.topic.map(str::to_owned),
        },
    )))?;

    // Casts: parameters in a SELECT list have no column to take a type from.
    let sql = format!(
        "WITH event AS ( \
             INSERT INTO webhook_events (id, source, topic, delivery_id, body, headers) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT ON CONSTRAINT webhook_events_source_delivery DO NOTHING \
             RETURNING id \
         ), job AS ( \
             INSERT INTO outbox ({columns}) \
             SELECT $7::uuid, $8::text, $9::text, $10::text, $11::jsonb, $12::jsonb FROM event \
         ), received AS ( \
             INSERT INTO outbox ({columns}) \
             SELECT $13::uuid, $14::text, $15::text, $16::text, $17::jsonb, $18::jsonb FROM event \
         ) \
         SELECT id FROM event",
        columns = OutboxRow::COLUMNS
    );
    let statement = client.prepare_cached(&sql).await?;
    let inserted = client
        .query_opt(
            &statement,
            &[
                &event_id,
                &event.source,
                &event.topic,
                &event.delivery_id,
                &event.body,
                event.headers,
                &job.id,
                &job.target,
                &job.routing_key,
                &job.message_type,
                &job.payload,
                &job.headers,
                &received.id,
                &received.target,
                &received.routing_key,
                &received.message_type,
                &received.payload,
                &received.headers,
            ],
        )
        .await?;
    if inserted.is_some() {
        return Ok(Captured::Stored(event_id));
    }

    // A redelivery. ON CONFLICT waited for any concurrent insert of the same
    // delivery to commit, so this read (a new snapshot) sees its row.
    let existing = client
        .query_opt(
            "SELECT id FROM webhook_events WHERE source = $1 AND delivery_id = $2",
            &[&event.source, &event.delivery_id],
        )
        .await?
        .ok_or(Error::Vanished)?;
    Ok(Captured::Duplicate(existing.try_get(0)?))
}
