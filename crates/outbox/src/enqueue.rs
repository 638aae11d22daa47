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
    insert(
        client,
        envelope.id,
        Target::Jobs,
        envelope.body.queue().routing_key(),
        envelope.message_type(),
        serde_json::to_value(envelope)?,
    )
    .await
}

/// Queues a domain event for publishing to the events exchange, with its
/// type as routing key. Same transaction rule as [`enqueue_job`].
pub async fn enqueue_event(
    client: &impl GenericClient,
    envelope: &Envelope<DomainEvent>,
) -> Result<()> {
    insert(
        client,
        envelope.id,
        Target::Events,
        envelope.message_type(),
        envelope.message_type(),
        serde_json::to_value(envelope)?,
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
) -> Result<()> {
    // The trace context of the request writing the row, so the consumer's
    // span continues that trace rather than the relay's.
    let headers = serde_json::to_value(current_trace_headers())?;
    // One round trip: insert, then NOTIFY the relay on the schema's channel.
    // Postgres delivers notifications only on commit (nothing on rollback)
    // and folds identical ones within a transaction into one.
    client
        .execute(
            "WITH inserted AS ( \
                 INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id \
             ) \
             SELECT pg_notify('outbox_' || current_schema(), '') FROM inserted",
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
