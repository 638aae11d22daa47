//! Capturing a verified delivery: the event row, its job and its domain
//! event, committed together or not at all.

use keel_contracts::events::WebhookReceived;
use keel_contracts::jobs::WebhookProcess;
use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::GenericClient;
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
/// event in the outbox, inside `transaction` (begun by the caller, which
/// then commits; on [`Captured::Duplicate`] the transaction holds no change
/// from this call).
///
/// The outbox rows are written without a NOTIFY: PostgreSQL serialises the
/// commits of notifying transactions, which would cost ingest its group
/// commit. After committing a [`Captured::Stored`], call
/// [`keel_outbox::wake_relays`] (coalesced across requests, as the gateway
/// does) or let the relay's poll find the rows.
///
/// The three inserts are sent at once (tokio-postgres pipelines statements
/// issued concurrently on one connection): one round trip instead of three,
/// which is most of an ingest's latency. The outbox rows are therefore
/// written optimistically; when the event turns out to be a duplicate they
/// are deleted again (one more round trip, on the rare path only), so a
/// redelivery stores nothing.
pub async fn capture(transaction: &impl GenericClient, event: &NewEvent<'_>) -> Result<Captured> {
    let event_id = Uuid::now_v7();
    let job = Envelope::new(Job::WebhookProcess(WebhookProcess { event_id }));
    let received = Envelope::new(DomainEvent::WebhookReceived(WebhookReceived {
        event_id,
        source: event.source.to_owned(),
        topic: event.topic.map(str::to_owned),
    }));

    let insert = transaction
        .prepare_cached(
            "INSERT INTO webhook_events (id, source, topic, delivery_id, body, headers) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT ON CONSTRAINT webhook_events_source_delivery DO NOTHING \
             RETURNING id",
        )
        .await?;
    let (inserted, (), ()) = futures::try_join!(
        async {
            transaction
                .query_opt(
                    &insert,
                    &[
                        &event_id,
                        &event.source,
                        &event.topic,
                        &event.delivery_id,
                        &event.body,
                        event.headers,
                    ],
                )
                .await
                .map_err(Error::from)
        },
        async {
            keel_outbox::enqueue_job_quietly(transaction, &job)
                .await
                .map_err(Error::from)
        },
        async {
            keel_outbox::enqueue_event_quietly(transaction, &received)
                .await
                .map_err(Error::from)
        },
    )?;
    if inserted.is_some() {
        return Ok(Captured::Stored(event_id));
    }

    // A redelivery. ON CONFLICT waited for any concurrent insert of the same
    // delivery to commit, so this read (a new snapshot) sees its row.
    transaction
        .execute(
            "DELETE FROM outbox WHERE id = ANY($1)",
            &[&vec![job.id, received.id]],
        )
        .await?;
    let existing = transaction
        .query_opt(
            "SELECT id FROM webhook_events WHERE source = $1 AND delivery_id = $2",
            &[&event.source, &event.delivery_id],
        )
        .await?
        .ok_or(Error::Vanished)?;
    Ok(Captured::Duplicate(existing.try_get(0)?))
}
