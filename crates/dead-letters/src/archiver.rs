//! The archiver: drains `{ns}.dead` into the `dead_letters` table, acking
//! each message only after its row is committed.
//!
//! Not the consumer runner: the runner answers a failing handler with
//! retries through the delay tiers, which dead-letter back to `{ns}.jobs` —
//! the wrong place for a dead message — and finally to `{ns}.dead` again.
//! Nor does it nack with requeue while the database is down: quorum queues
//! count returned messages against a delivery limit (RabbitMQ 4 sets 20 by
//! default) and `{ns}.dead` dead-letters nowhere, so a long outage would
//! drop dead letters. Instead a message that cannot be stored stays unacked,
//! in the queue, while the store is retried with backoff; at shutdown the
//! channel closes and it returns to the queue untouched.

use std::time::Duration;

use futures::StreamExt;
use keel_db::Pool;
use keel_messaging::{Broker, Session, SessionEnd};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::archive::{Archived, archive};
use crate::error::Result;
use crate::letter::NewDeadLetter;
use crate::metrics::ArchiverMetrics;

/// Dead messages the broker may push ahead of the one being stored. They
/// are stored one at a time (dead letters are rare; order is kept).
const PREFETCH: u16 = 16;

/// Drains the namespace's dead queue into PostgreSQL until shut down.
#[derive(Debug)]
pub struct Archiver {
    broker: Broker,
    pool: Pool,
    metrics: ArchiverMetrics,
}

impl Archiver {
    /// `pool` is pinned to the schema holding `dead_letters` (`store`).
    pub fn new(broker: Broker, pool: Pool, metrics: ArchiverMetrics) -> Self {
        Self {
            broker,
            pool,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled, on the broker's shared session
    /// loop (`amqp.reconnect` backoff with jitter) whenever the channel is
    /// lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let broker = self.broker.clone();
        keel_messaging::run_sessions(&broker, &self, &shutdown).await;
        tracing::info!("dead-letter archiver stopped");
    }

    async fn consume(
        &self,
        channel: &Channel,
        consumer: &mut lapin::Consumer,
        queue: &str,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let tag = consumer.tag();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Wait for cancel-ok: nothing new arrives after it.
                    let cancel = channel.basic_cancel(tag.clone(), BasicCancelOptions { nowait: false });
                    if let Err(error) = cancel.await {
                        tracing::debug!(error = %error, "basic.cancel failed");
                    }
                    return SessionEnd::Stopped;
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        if !self.archive_and_ack(&delivery, shutdown).await {
                            return SessionEnd::Stopped;
                        }
                    }
                    Some(Err(error)) => return SessionEnd::Lost(error.into()),
                    None => return SessionEnd::Lost(keel_messaging::Error::ConsumerCancelled(queue.to_owned())),
                },
            }
        }
    }

    async fn start(&self, channel: &Channel, queue: &str) -> Result<lapin::Consumer, lapin::Error> {
        // Per consumer, not per channel: the usual RabbitMQ meaning.
        channel
            .basic_qos(PREFETCH, BasicQosOptions { global: false })
            .await?;
        channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(format!("dead-letter-archiver-{}", Uuid::new_v4())),
                BasicConsumeOptions {
                    // RabbitMQ ignores no_local; written for completeness.
                    no_local: false,
                    // Manual acks: only after the row is committed.
                    no_ack: false,
                    // Every worker replica runs an archiver; they share the
                    // queue (the table de-duplicates).
                    exclusive: false,
                    // Wait for consume-ok so a missing queue fails here.
                    nowait: false,
                },
                FieldTable::default(),
            )
            .await
    }

    /// Stores the delivery, retrying with backoff until it is committed,
    /// then acks. `false` when shutdown came first (the message stays
    /// unacked and returns to the queue with the channel).
    async fn archive_and_ack(&self, delivery: &Delivery, shutdown: &CancellationToken) -> bool {
        let letter = NewDeadLetter::from_parts(
            &delivery.properties,
            delivery.routing_key.as_str(),
            &delivery.data,
        );
        let mut failures = 0u32;
        loop {
            match self.store(&letter).await {
                Ok(archived) => {
                    self.metrics.archived(archived);
                    tracing::info!(
                        message_id = %letter.id,
                        message_type = %letter.message_type,
                        reason = %letter.death_reason,
                        outcome = archived.as_str(),
                        "dead letter archived"
                    );
                    // Single ack: later deliveries are still unacked. A failed
                    // ack means the channel is gone: the message comes back
                    // and is recognised as a duplicate.
                    if let Err(error) = delivery
                        .acker
                        .ack(BasicAckOptions { multiple: false })
                        .await
                    {
                        tracing::warn!(error = %error, "ack of an archived dead letter failed");
                    }
                    return true;
                }
                Err(error) => {
                    failures += 1;
                    self.metrics.failed();
                    let delay = retry_delay(&self.broker, failures);
                    tracing::warn!(
                        message_id = %letter.id, error = %error, ?delay,
                        "cannot archive a dead letter yet; it stays in the queue"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn store(&self, letter: &NewDeadLetter) -> Result<Archived> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        archive(&client, letter).await
    }
}

/// The `amqp.reconnect` backoff (doubling from its minimum to its maximum):
/// the database is one more dependency to wait for.
fn retry_delay(broker: &Broker, failures: u32) -> Duration {
    broker.settings().reconnect.delay(failures)
}

impl Session for Archiver {
    fn name(&self) -> &str {
        "dead-letter archiver"
    }

    async fn run_session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        let queue = self.broker.topology().dead_queue();
        let end = match self.start(&channel, &queue).await {
            Ok(mut consumer) => {
                tracing::info!(%queue, "archiving dead letters");
                self.consume(&channel, &mut consumer, &queue, shutdown)
                    .await
            }
            Err(error) => SessionEnd::Failed(error.into()),
        };
        // Unacked messages (one being retried at shutdown, prefetched ones)
        // return to the queue with the channel.
        if channel.status().connected()
            && let Err(error) = channel
                .close(200, ShortString::from("archiver stopped"))
                .await
        {
            tracing::debug!(error = %error, "closing the archiver channel failed");
        }
        end
    }
}
