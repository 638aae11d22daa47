//! Sending a dead job or event back to its queue, through the outbox.

use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::Transaction;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::queries::Status;

/// What [`requeue`] enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    /// The dead letter.
    pub id: Uuid,
    /// The new message's id (the row's `requeued_as`).
    pub message_id: Uuid,
    /// The job it carries, as it was in the dead message; `None` for a
    /// domain event (an analytics dead letter).
    pub job: Option<Job>,
}

/// Marks dead letter `id` requeued by `by` and enqueues its job again, in
/// the caller's transaction (commit it; the relay publishes after commit).
///
/// The job travels in a *new* envelope: consumers de-duplicate by message
/// id, and a handler that recorded the old id (or a relay that publishes
/// twice) must not make the requeue a no-op. Jobs carry only the id of the
/// row that describes the work, so the new message sees current state.
/// The row is locked first, so two admins requeueing at once enqueue one
/// job: the second gets [`Error::AlreadyRequeued`].
pub async fn requeue(tx: &Transaction<'_>, id: Uuid, by: Option<Uuid>) -> Result<Requeued> {
    let row = tx
        .query_opt(
            "SELECT status, body FROM dead_letters WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(Error::NotFound(id))?;
    let status: String = row.try_get(0)?;
    if Status::parse(&status) == Some(Status::Requeued) {
        return Err(Error::AlreadyRequeued(id));
    }
    let body: Vec<u8> = row.try_get(1)?;
    let (message_id, job) = match serde_json::from_slice::<Envelope<Job>>(&body) {
        Ok(dead) => {
            let again = Envelope::new(dead.body);
            keel_outbox::enqueue_job(tx, &again).await?;
            (again.id, Some(again.body))
        }
        // Not a job: a domain event that died in an event consumer
        // (analytics). It goes back through the events exchange with its
        // own routing key (its type) and its original `occurred_at`, so it
        // lands in the same buckets. A new id, as for jobs: the outbox keys
        // rows by it, and the dead event was never stored by the consumer
        // it died in (a stored event is acknowledged), so analytics counts
        // it once; the gateway's cache subscribers only evict on it.
        Err(not_a_job) => {
            let dead: Envelope<DomainEvent> =
                serde_json::from_slice(&body).map_err(|not_an_event| Error::NotAJob {
                    id,
                    reason: format!("not a job ({not_a_job}) nor a domain event ({not_an_event})"),
                })?;
            let again = Envelope::with_id(Uuid::now_v7(), dead.occurred_at, dead.body);
            keel_outbox::enqueue_event(tx, &again).await?;
            (again.id, None)
        }
    };
    tx.execute(
        "UPDATE dead_letters SET status = 'requeued', requeued_at = now(), \
             requeued_by = $2, requeued_as = $3 \
         WHERE id = $1",
        &[&id, &by, &message_id],
    )
    .await?;
    Ok(Requeued {
        id,
        message_id,
        job,
    })
}
