//! Writing messages into the outbox, inside the caller's transaction.

use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::GenericClient;
use keel_messaging::Target;
use keel_messaging::trace::current_trace_headers;
use uuid::Uuid;

use crate::error::Result;

/// Queues a job for publishing to the jobs exchange. Pass the open
/// transaction that writes the state the job refers to: the row commits (and
/// the relay is notified) only with it.
///
/// The NOTIFY makes the transaction commit one at a time with every other
/// notifying one (see [`wake_relays`]): right for occasional writes (admin
/// actions, exports, account changes), wrong for a path many requests take
/// at once. Those write an [`OutboxRow`] without NOTIFY, inside their own
/// statement or with [`OutboxRow::insert_without_notify`], and wake the
/// relay after their commit (`Relay::waker`): webhook capture, the worker,
/// `POST /api/v1/orders`.
pub async fn enqueue_job(client: &impl GenericClient, envelope: &Envelope<Job>) -> Result<()> {
    OutboxRow::job(envelope)?.insert(client).await
}

/// Queues a domain event for publishing to the events exchange, with its
/// type as routing key. Same transaction rule as [`enqueue_job`].
pub async fn enqueue_event(
    client: &impl GenericClient,
    envelope: &Envelope<DomainEvent>,
) -> Result<()> {
    OutboxRow::event(envelope)?.insert(client).await
}

/// Wakes the relays of the client's schema, in a transaction of its own
/// (call it outside the writing transaction, after its commit).
///
/// Why not NOTIFY inside the writing transaction: PostgreSQL serialises the
/// commits of notifying transactions (`PreCommit_Notify` holds a database-wide
/// lock until the commit is done, WAL flush included), so concurrent writers
/// that NOTIFY cannot share a WAL flush, and group commit collapses to one
/// commit per flush. Here the NOTIFY commits asynchronously
/// (`synchronous_commit = off`), holding that lock for an instant; a
/// notification lost in a crash only delays publishing to the relay's poll.
pub async fn wake_relays(client: &impl GenericClient) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = off; \
             SELECT pg_notify('outbox_' || current_schema(), ''); COMMIT",
        )
        .await?;
    Ok(())
}

/// An outbox row's values, for a writer that inserts the row inside its own
/// statement — e.g. `INSERT INTO outbox (COLUMNS) SELECT ... FROM inserted`,
/// so the row exists only when the writer's own insert happened. Such rows
/// carry no NOTIFY: call [`wake_relays`] after the commit (or let the
/// relay's poll find them).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: Uuid,
    pub target: &'static str,
    pub routing_key: &'static str,
    pub message_type: &'static str,
    pub payload: serde_json::Value,
    /// Trace context of the writing span.
    pub headers: serde_json::Value,
}

impl OutboxRow {
    /// The `outbox` columns the fields fill, in field order.
    pub const COLUMNS: &'static str = "id, target, routing_key, message_type, payload, headers";

    /// The row [`enqueue_job`] would write.
    pub fn job(envelope: &Envelope<Job>) -> Result<Self> {
        Ok(Self {
            id: envelope.id,
            target: Target::Jobs.as_str(),
            routing_key: envelope.body.queue().routing_key(),
            message_type: envelope.message_type(),
            payload: serde_json::to_value(envelope)?,
            headers: serde_json::to_value(current_trace_headers())?,
        })
    }

    /// The row [`enqueue_event`] would write.
    pub fn event(envelope: &Envelope<DomainEvent>) -> Result<Self> {
        Ok(Self {
            id: envelope.id,
            target: Target::Events.as_str(),
            routing_key: envelope.message_type(),
            message_type: envelope.message_type(),
            payload: serde_json::to_value(envelope)?,
            headers: serde_json::to_value(current_trace_headers())?,
        })
    }
}

impl OutboxRow {
    /// Inserts the row as it is, without NOTIFY: for a hot path that wakes
    /// the relay after its commit ([`crate::Relay::waker`]).
    pub async fn insert_without_notify(&self, client: &impl GenericClient) -> Result<()> {
        self.execute(
            client,
            "INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
    }

    async fn insert(&self, client: &impl GenericClient) -> Result<()> {
        // One round trip: insert, then NOTIFY the relay on the schema's
        // channel. Postgres delivers notifications only on commit (nothing
        // on rollback) and folds identical ones within a transaction.
        self.execute(
            client,
            "WITH inserted AS ( \
                 INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id \
             ) \
             SELECT pg_notify('outbox_' || current_schema(), '') FROM inserted",
        )
        .await
    }

    /// Runs `sql` with the row's fields as `$1..$6`, in [`Self::COLUMNS`]
    /// order. Prepared once per connection (text would be prepared every
    /// call).
    async fn execute(&self, client: &impl GenericClient, sql: &str) -> Result<()> {
        let statement = client.prepare_cached(sql).await?;
        client
            .execute(
                &statement,
                &[
                    &self.id,
                    &self.target,
                    &self.routing_key,
                    &self.message_type,
                    &self.payload,
                    &self.headers,
                ],
            )
            .await?;
        Ok(())
    }
}
