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
pub async fn enqueue_job(client: &impl GenericClient, envelope: &Envelope<Job>) -> Result<()> {
    insert_job(client, envelope, Wake::OnCommit).await
}

/// Queues a domain event for publishing to the events exchange, with its
/// type as routing key. Same transaction rule as [`enqueue_job`].
pub async fn enqueue_event(
    client: &impl GenericClient,
    envelope: &Envelope<DomainEvent>,
) -> Result<()> {
    insert_event(client, envelope, Wake::OnCommit).await
}

/// [`enqueue_job`] without the NOTIFY: for write paths that must keep
/// PostgreSQL's group commit (see [`wake_relays`]), which then call
/// [`wake_relays`] after their commit (or rely on the relay's poll).
pub async fn enqueue_job_quietly(
    client: &impl GenericClient,
    envelope: &Envelope<Job>,
) -> Result<()> {
    insert_job(client, envelope, Wake::Later).await
}

/// [`enqueue_event`] without the NOTIFY; see [`enqueue_job_quietly`].
pub async fn enqueue_event_quietly(
    client: &impl GenericClient,
    envelope: &Envelope<DomainEvent>,
) -> Result<()> {
    insert_event(client, envelope, Wake::Later).await
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

/// Whether the insert also NOTIFYs the relays (on commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    OnCommit,
    Later,
}

async fn insert_job(
    client: &impl GenericClient,
    envelope: &Envelope<Job>,
    wake: Wake,
) -> Result<()> {
    insert(
        client,
        envelope.id,
        Target::Jobs,
        envelope.body.queue().routing_key(),
        envelope.message_type(),
        serde_json::to_value(envelope)?,
        wake,
    )
    .await
}

async fn insert_event(
    client: &impl GenericClient,
    envelope: &Envelope<DomainEvent>,
    wake: Wake,
) -> Result<()> {
    insert(
        client,
        envelope.id,
        Target::Events,
        envelope.message_type(),
        envelope.message_type(),
        serde_json::to_value(envelope)?,
        wake,
    )
    .await
}

async fn insert(
    client: &impl GenericClient,
    id: Uuid,
    target: Target,
    routing_key: &str,
    message_type: &str,
    payload: serde_json::Value,
    wake: Wake,
) -> Result<()> {
    // The trace context of the request writing the row, so the consumer's
    // span continues that trace rather than the relay's.
    let headers = serde_json::to_value(current_trace_headers())?;
    let sql = match wake {
        // One round trip: insert, then NOTIFY the relay on the schema's
        // channel. Postgres delivers notifications only on commit (nothing
        // on rollback) and folds identical ones within a transaction.
        Wake::OnCommit => {
            "WITH inserted AS ( \
                 INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id \
             ) \
             SELECT pg_notify('outbox_' || current_schema(), '') FROM inserted"
        }
        Wake::Later => {
            "INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        }
    };
    // Cached per connection: a statement given as text is prepared again
    // on every call (one more round trip).
    let statement = client.prepare_cached(sql).await?;
    client
        .execute(
            &statement,
            &[
                &id,
                &target.as_str(),
                &routing_key,
                &message_type,
                &payload,
                &headers,
            ],
        )
        .await?;
    Ok(())
}
