//! Capturing a verified delivery: the event row, its job and its domain
//! event, committed together or not at all.

use std::collections::{HashMap, HashSet};

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

/// A delivery with its event id and outbox rows, built in the request's own
/// task so the rows carry its trace context, whichever task writes them.
#[derive(Debug, Clone)]
pub struct PreparedCapture {
    pub event_id: Uuid,
    pub source: String,
    pub topic: Option<String>,
    pub delivery_id: String,
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
    job: OutboxRow,
    received: OutboxRow,
}

impl PreparedCapture {
    pub fn new(event: &NewEvent<'_>) -> Result<Self> {
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
        Ok(Self {
            event_id,
            source: event.source.to_owned(),
            topic: event.topic.map(str::to_owned),
            delivery_id: event.delivery_id.to_owned(),
            body: event.body.to_vec(),
            headers: event.headers.clone(),
            job,
            received,
        })
    }

    /// Deliveries are unique per source: the key of the unique constraint.
    pub fn key(&self) -> (&str, &str) {
        (&self.source, &self.delivery_id)
    }
}

/// Stores `event` with its `webhook.process` job and `webhook.received`
/// event in the outbox, in one statement: atomic on its own (pass a pooled
/// client), or part of the caller's transaction if given one. A redelivery
/// stores nothing and names the first event. See [`capture_many`].
pub async fn capture(client: &impl GenericClient, event: &NewEvent<'_>) -> Result<Captured> {
    let mut outcomes =
        capture_many(client, std::slice::from_ref(&PreparedCapture::new(event)?)).await?;
    outcomes.pop().ok_or(Error::Vanished)
}

/// Captures several deliveries in one statement (one round trip, one
/// commit in autocommit): what [`crate::group_commit`] sends for every
/// request that arrived while the previous commit was in flight. The answer
/// has one entry per input, in order.
///
/// Each event's outbox rows are inserted from the event insert's
/// `RETURNING`, so a redelivery (`ON CONFLICT DO NOTHING` returns nothing)
/// writes no outbox row either; only then does a second statement read the
/// first event's id. The rows carry no NOTIFY: PostgreSQL serialises the
/// commits of notifying transactions (across their WAL flush), which would
/// undo group commit. After a [`Captured::Stored`], wake the relay
/// (`keel_outbox::Relay::waker`) or let its poll find the rows.
///
/// Rows are inserted in (source, delivery id) order, so two batches that
/// share deliveries wait for each other in one direction only (no deadlock);
/// a delivery that appears twice in `events` is stored once, and the later
/// copies answer [`Captured::Duplicate`] with its id.
pub async fn capture_many(
    client: &impl GenericClient,
    events: &[PreparedCapture],
) -> Result<Vec<Captured>> {
    // The first of each key is the one offered to the database.
    let mut seen = HashSet::with_capacity(events.len());
    let mut offered: Vec<&PreparedCapture> =
        events.iter().filter(|e| seen.insert(e.key())).collect();
    offered.sort_unstable_by(|a, b| a.key().cmp(&b.key()));

    let ids: Vec<Uuid> = offered.iter().map(|e| e.event_id).collect();
    let sources: Vec<&str> = offered.iter().map(|e| e.source.as_str()).collect();
    let topics: Vec<Option<&str>> = offered.iter().map(|e| e.topic.as_deref()).collect();
    let deliveries: Vec<&str> = offered.iter().map(|e| e.delivery_id.as_str()).collect();
    let bodies: Vec<&[u8]> = offered.iter().map(|e| e.body.as_slice()).collect();
    let headers: Vec<&serde_json::Value> = offered.iter().map(|e| &e.headers).collect();
    let rows: Vec<(Uuid, &OutboxRow)> = offered
        .iter()
        .flat_map(|e| [(e.event_id, &e.job), (e.event_id, &e.received)])
        .collect();
    let row_events: Vec<Uuid> = rows.iter().map(|(event, _)| *event).collect();
    let row_ids: Vec<Uuid> = rows.iter().map(|(_, r)| r.id).collect();
    let row_targets: Vec<&str> = rows.iter().map(|(_, r)| r.target).collect();
    let row_keys: Vec<&str> = rows.iter().map(|(_, r)| r.routing_key).collect();
    let row_types: Vec<&str> = rows.iter().map(|(_, r)| r.message_type).collect();
    let row_payloads: Vec<&serde_json::Value> = rows.iter().map(|(_, r)| &r.payload).collect();
    let row_headers: Vec<&serde_json::Value> = rows.iter().map(|(_, r)| &r.headers).collect();

    // WITH ORDINALITY + ORDER BY: insertion (and so row-lock) order is the
    // sorted order above, not whatever the planner would pick.
    let sql = format!(
        "WITH event AS ( \
             INSERT INTO webhook_events (id, source, topic, delivery_id, body, headers) \
             SELECT id, source, topic, delivery_id, body, headers \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::jsonb[]) \
                  WITH ORDINALITY AS d(id, source, topic, delivery_id, body, headers, n) \
             ORDER BY n \
             ON CONFLICT ON CONSTRAINT webhook_events_source_delivery DO NOTHING \
             RETURNING id \
         ), rows AS ( \
             INSERT INTO outbox ({columns}) \
             SELECT r.id, r.target, r.routing_key, r.message_type, r.payload, r.headers \
             FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], \
                         $12::jsonb[], $13::jsonb[]) \
                  AS r(event_id, id, target, routing_key, message_type, payload, headers) \
             JOIN event ON event.id = r.event_id \
         ) \
         SELECT id FROM event",
        columns = OutboxRow::COLUMNS
    );
    let statement = client.prepare_cached(&sql).await?;
    let stored: HashSet<Uuid> = client
        .query(
            &statement,
            &[
                &ids,
                &sources,
                &topics,
                &deliveries,
                &bodies,
                &headers,
                &row_events,
                &row_ids,
                &row_targets,
                &row_keys,
                &row_types,
                &row_payloads,
                &row_headers,
            ],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;

    // Each offered key's event: the one just stored, or for a redelivery
    // the one stored earlier (ON CONFLICT waited for any concurrent insert
    // of it to commit, so this read, a new snapshot, sees its row).
    let mut first: HashMap<(&str, &str), Uuid> = offered
        .iter()
        .filter(|e| stored.contains(&e.event_id))
        .map(|e| (e.key(), e.event_id))
        .collect();
    let redelivered: Vec<&PreparedCapture> = offered
        .iter()
        .copied()
        .filter(|e| !stored.contains(&e.event_id))
        .collect();
    if !redelivered.is_empty() {
        let sources: Vec<&str> = redelivered.iter().map(|e| e.source.as_str()).collect();
        let deliveries: Vec<&str> = redelivered.iter().map(|e| e.delivery_id.as_str()).collect();
        for row in client
            .query(
                "SELECT k.n, w.id FROM webhook_events w \
                 JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(source, delivery_id, n) \
                   ON w.source = k.source AND w.delivery_id = k.delivery_id",
                &[&sources, &deliveries],
            )
            .await?
        {
            let n: i64 = row.try_get(0)?;
            let event = usize::try_from(n - 1)
                .ok()
                .and_then(|i| redelivered.get(i))
                .ok_or(Error::Vanished)?;
            first.insert(event.key(), row.try_get(1)?);
        }
    }

    events
        .iter()
        .map(|event| {
            let id = *first.get(&event.key()).ok_or(Error::Vanished)?;
            // Event ids are unique per capture: only the copy stored here
            // carries the id that was stored.
            Ok(if id == event.event_id {
                Captured::Stored(id)
            } else {
                Captured::Duplicate(id)
            })
        })
        .collect()
}
