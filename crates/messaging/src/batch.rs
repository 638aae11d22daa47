//! The batch consumer runner: drains one queue into a [`BatchHandler`] a
//! batch at a time, for consumers whose cost is per transaction rather than
//! per message (analytics inserts thousands of events per commit).
//!
//! A batch closes when it holds `max_size` deliveries or `max_wait` has
//! passed since its first delivery. The handler decodes each message first:
//! an undecodable one is dead-lettered on its own, the rest go to
//! [`BatchHandler::handle`] together. After the handler returns `Ok` (its
//! transaction committed) the whole batch is acknowledged with one
//! multiple-ack up to the last delivery tag.
//!
//! When the handler fails:
//! - [`HandlerError::Unavailable`] (the database cannot be reached): the
//!   batch stays in hand, unacknowledged and uncounted, and is tried again
//!   after a growing pause until the database is back or the consumer stops
//!   (ADR 0022). A plain requeue would count a delivery of every message on
//!   a quorum queue, and a few minutes of outage would dead-letter them.
//! - any other failure: the batch is split in halves, each applied on its
//!   own, until the failing message stands alone; it is dead-lettered alone
//!   if the failure is permanent, requeued (counted) if transient, and the
//!   rest commit. The handler must therefore be idempotent per message,
//!   which it has to be anyway because a crash between commit and ack
//!   redelivers the batch.
//!
//! It shares with the single-message [`Consumer`](crate::Consumer) the
//! delivery parsing, the dead-letter headers, the reconnect loop
//! ([`run_sessions`](crate::session::run_sessions)) and the collection of
//! a batch ([`next_batch`], which the consumer's batch mode uses too).
//!
//! This runner suits handlers for which a message has no life of its own
//! (analytics: no attempts, no retry tiers). Jobs that keep the retry
//! tiers, attempt count and failure bookkeeping of the single runner use
//! that runner's batch mode instead ([`Consumer::with_batches`](crate::Consumer::with_batches)).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::types::ShortString;
use tokio_util::sync::CancellationToken;

use crate::connection::Broker;
use crate::consumer::{DecodeError, HandlerError, Incoming, dead_letter_properties};
use crate::error::{Error, Result};
use crate::metrics::{ConsumerMetrics, Outcome};
use crate::publisher::Publisher;
use crate::session::{Session, SessionEnd, run_sessions, start_consuming};
use crate::topology::QueueSpec;

/// Application code run for each batch.
pub trait BatchHandler: Send + Sync + 'static {
    /// What one message becomes once decoded.
    type Item: Send + 'static;

    /// Decodes one message. An error dead-letters that message alone (its
    /// bytes will never decode) and the rest of the batch goes on.
    fn decode(&self, message: &Incoming) -> Result<Self::Item, DecodeError>;

    /// Applies a batch (never empty) in one transaction and commits it
    /// before returning `Ok`: the acknowledgement follows. Redeliveries of
    /// items already applied must change nothing.
    fn handle(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// How a batch consumer runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most deliveries in one batch.
    pub max_size: usize,
    /// Longest a batch waits for more deliveries after its first one.
    pub max_wait: Duration,
    /// Unacknowledged deliveries the broker may push ahead; raised to
    /// `max_size` if lower (a batch could never fill otherwise).
    pub prefetch: u16,
    /// Shown in the management UI.
    pub consumer_tag: String,
}

impl BatchOptions {
    /// The prefetch actually requested: at least one full batch.
    pub fn effective_prefetch(&self) -> u16 {
        let batch = u16::try_from(self.max_size.max(1)).unwrap_or(u16::MAX);
        self.prefetch.max(batch)
    }
}

/// Drains one queue into a [`BatchHandler`] until told to stop.
#[derive(Debug)]
pub struct BatchConsumer<H> {
    broker: Broker,
    queue: QueueSpec,
    options: BatchOptions,
    metrics: ConsumerMetrics,
    publisher: Publisher,
    handler: H,
}

/// What became of a collected batch.
enum Settled {
    /// Acknowledged (or requeued after a failure): carry on.
    Done,
    /// Shutdown came while the batch was held for an outage: stop.
    Stopped,
    /// The channel failed while settling: reconnect.
    Lost(Error),
}

/// What becomes of one delivery of a batch.
#[derive(Debug, Clone)]
enum Fate {
    /// Committed by the handler (the default until something fails).
    Applied,
    /// Dead-lettered already (undecodable); acknowledged with the batch.
    Dead,
    /// Failed permanently alone: to dead-letter with this error.
    DeadLetter(String),
    /// Failed transiently alone: back to the queue (counted).
    Requeue,
}

impl<H: BatchHandler> BatchConsumer<H> {
    pub fn new(
        broker: Broker,
        queue: QueueSpec,
        handler: H,
        options: BatchOptions,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self {
            publisher: Publisher::new(broker.clone()),
            broker,
            queue,
            options,
            metrics,
            handler,
        }
    }

    /// Runs until `shutdown` is cancelled, reconnecting with backoff
    /// whenever the broker goes away. On shutdown the batch in hand is
    /// finished (handled and acknowledged), then consumption is cancelled
    /// and the channel closed, so anything buffered returns to the queue.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        run_sessions(&self.broker, &self, &shutdown).await;
        Ok(())
    }

    async fn session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        let mut consumer = match self.start(&channel).await {
            Ok(consumer) => consumer,
            Err(error) => return SessionEnd::Failed(error),
        };
        tracing::info!(
            queue = %self.queue.name,
            max_size = self.options.max_size,
            max_wait = ?self.options.max_wait,
            "consuming in batches"
        );
        let tag = consumer.tag();
        // Consecutive transient failures: the pause before a requeue grows
        // with them, so a database outage is not a hot redelivery loop.
        let mut failures = 0u32;
        let max_size = self.options.max_size.max(1);

        let end = loop {
            let batch = match next_batch(
                &mut consumer,
                &self.queue.name,
                max_size,
                self.options.max_wait,
                shutdown,
            )
            .await
            {
                NextBatch::Batch(batch) => batch,
                NextBatch::Stopped => break SessionEnd::Stopped,
                NextBatch::Lost(error) => break SessionEnd::Lost(error),
            };
            match self.settle(batch, &mut failures, shutdown).await {
                Settled::Done => {}
                Settled::Stopped => break SessionEnd::Stopped,
                Settled::Lost(error) => break SessionEnd::Lost(error),
            }
        };

        if matches!(end, SessionEnd::Stopped) {
            let cancel = channel.basic_cancel(tag, BasicCancelOptions { nowait: false });
            if let Err(error) = cancel.await {
                tracing::warn!(error = %error, "basic.cancel failed");
            }
        }
        // Closing the channel returns every unacknowledged delivery to the
        // queue.
        if channel.status().connected()
            && let Err(error) = channel
                .close(200, ShortString::from("batch consumer stopped"))
                .await
        {
            tracing::debug!(error = %error, "closing the consumer channel failed");
        }
        if matches!(end, SessionEnd::Stopped) {
            tracing::info!(queue = %self.queue.name, "batch consumer stopped");
        }
        end
    }

    /// Decodes, handles and acknowledges (or requeues) one batch.
    async fn settle(
        &self,
        batch: Vec<Delivery>,
        failures: &mut u32,
        shutdown: &CancellationToken,
    ) -> Settled {
        let queue = self.queue.name.as_str();
        let size = batch.len();
        self.metrics
            .in_flight(queue, i64::try_from(size).unwrap_or(i64::MAX));
        let started = Instant::now();
        let mut fates = vec![Fate::Applied; size];
        let mut live = Vec::with_capacity(size);
        let mut reroute_failed = None;
        for (index, delivery) in batch.iter().enumerate() {
            match self.decode(delivery) {
                Ok(_) => live.push(index),
                Err(reason) => match self.dead_letter(delivery, "undecodable", &reason).await {
                    Ok(()) => fates[index] = Fate::Dead,
                    Err(error) => {
                        reroute_failed = Some(error);
                        break;
                    }
                },
            }
        }

        let stopped = match reroute_failed {
            // The dead letter could not be published: keep the message (and
            // so the batch) rather than lose it.
            Some(error) => {
                tracing::warn!(queue, error = %error, "could not dead-letter an undecodable message");
                fates.iter_mut().for_each(|fate| *fate = Fate::Requeue);
                false
            }
            None => self.apply(&batch, live, &mut fates, shutdown).await,
        };
        self.metrics
            .observe_duration(queue, started.elapsed().as_secs_f64());
        self.metrics
            .in_flight(queue, -i64::try_from(size).unwrap_or(i64::MAX));
        if stopped {
            // Shutdown during an outage: nothing is settled; closing the
            // channel returns the whole batch to the queue.
            return Settled::Stopped;
        }
        self.acknowledge(&batch, &fates, failures, shutdown).await
    }

    /// Decodes one delivery; `Err` carries why it never will.
    fn decode(&self, delivery: &Delivery) -> Result<H::Item, String> {
        let message = Incoming::from_delivery(delivery)?;
        self.handler.decode(&message).map_err(|e| e.to_string())
    }

    /// Applies the decodable deliveries `live`, filling in their fates.
    ///
    /// - The database is unavailable: the group stays in hand and is tried
    ///   again after a growing pause, without any delivery being counted
    ///   (ADR 0022). Returns `true` if shutdown ended such a wait.
    /// - Any other failure of a group of several: it is split in halves,
    ///   each applied on its own, until the failing message stands alone
    ///   (log2 of the batch size extra transactions). The handler is
    ///   idempotent per message, so the halves that commit are stored
    ///   exactly once.
    /// - A single message that fails permanently is dead-lettered alone; one
    ///   that fails transiently is requeued (the delivery limit ends it).
    async fn apply(
        &self,
        batch: &[Delivery],
        live: Vec<usize>,
        fates: &mut [Fate],
        shutdown: &CancellationToken,
    ) -> bool {
        let queue = self.queue.name.as_str();
        let mut groups = vec![live];
        let mut outages = 0u32;
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            // Decoded again for each try: items are moved into the handler,
            // and a decode that succeeded once succeeds again.
            let mut items = Vec::with_capacity(group.len());
            for &index in &group {
                match self.decode(&batch[index]) {
                    Ok(item) => items.push(item),
                    Err(reason) => fates[index] = Fate::DeadLetter(reason),
                }
            }
            if items.is_empty() {
                continue;
            }
            // A panicking handler must not leave its deliveries
            // unacknowledged for the life of the channel.
            let result = AssertUnwindSafe(self.handler.handle(items))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::transient("the batch handler panicked")));
            match result {
                Ok(()) => outages = 0,
                Err(HandlerError::Unavailable(error)) => {
                    outages = outages.saturating_add(1);
                    self.metrics.held(queue);
                    let delay = self.broker.settings().reconnect.delay(outages);
                    tracing::warn!(
                        queue, error = %error, size = group.len(), ?delay,
                        "the database is unavailable; holding the batch"
                    );
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return true,
                        () = tokio::time::sleep(delay) => {}
                    }
                    groups.push(group);
                }
                Err(error) if group.len() > 1 => {
                    tracing::warn!(
                        queue, error = %error, size = group.len(),
                        "batch failed; splitting it to isolate the failing message"
                    );
                    let (left, right) = group.split_at(group.len() / 2);
                    // Popped left first: deliveries are applied in order.
                    groups.push(right.to_vec());
                    groups.push(left.to_vec());
                }
                Err(HandlerError::Permanent(error)) => {
                    fates[group[0]] = Fate::DeadLetter(error.to_string());
                }
                Err(HandlerError::Transient(error)) => {
                    tracing::warn!(queue, error = %error, "message failed transiently; requeueing it");
                    fates[group[0]] = Fate::Requeue;
                }
            }
        }
        false
    }

    /// Settles every delivery of the batch by its fate: one multiple-ack
    /// when all were applied (or dead-lettered at decode), else one by one.
    async fn acknowledge(
        &self,
        batch: &[Delivery],
        fates: &[Fate],
        failures: &mut u32,
        shutdown: &CancellationToken,
    ) -> Settled {
        let queue = self.queue.name.as_str();
        let Some(last) = batch.last() else {
            return Settled::Done;
        };
        let mut fates = fates.to_vec();
        // Dead letters found by splitting are published now; one that
        // cannot be published is kept (requeued) rather than lost.
        for (delivery, fate) in batch.iter().zip(fates.iter_mut()) {
            if let Fate::DeadLetter(reason) = fate {
                *fate = match self.dead_letter(delivery, "permanent", reason).await {
                    Ok(()) => Fate::Dead,
                    Err(error) => {
                        tracing::warn!(queue, error = %error, "could not dead-letter a failing message; requeueing it");
                        Fate::Requeue
                    }
                };
            }
        }
        let requeued = fates.iter().filter(|f| matches!(f, Fate::Requeue)).count();
        if requeued == 0 {
            *failures = 0;
            // One ack for the whole batch: every tag up to the last one.
            // Dead-lettered deliveries were not acked on their own, so none
            // is acknowledged twice.
            if let Err(error) = last.acker.ack(BasicAckOptions { multiple: true }).await {
                tracing::warn!(error = %error, "batch ack failed; the batch will be redelivered");
                return Settled::Lost(error.into());
            }
        } else {
            // A pause before the requeue, growing with consecutive
            // failures, so a failing message is not a hot redelivery loop.
            *failures += 1;
            let delay = self.broker.settings().reconnect.delay(*failures);
            tracing::warn!(
                queue,
                requeued,
                ?delay,
                "requeueing failed messages after a pause"
            );
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
            for (delivery, fate) in batch.iter().zip(&fates) {
                let settled = if matches!(fate, Fate::Requeue) {
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await
                } else {
                    delivery
                        .acker
                        .ack(BasicAckOptions { multiple: false })
                        .await
                };
                if let Err(error) = settled {
                    tracing::warn!(error = %error, "settling a delivery failed; the rest will be redelivered");
                    return Settled::Lost(error.into());
                }
            }
        }
        for fate in &fates {
            let outcome = match fate {
                Fate::Applied => Outcome::Ok,
                Fate::Dead | Fate::DeadLetter(_) => Outcome::Dead,
                Fate::Requeue => Outcome::Requeued,
            };
            self.metrics.outcome(queue, outcome);
        }
        Settled::Done
    }

    /// Publishes one delivery to the dead-letter exchange (acknowledged
    /// later with its batch); `kind` is the death reason header
    /// (`undecodable`, `permanent`), `error` the handler's.
    async fn dead_letter(&self, delivery: &Delivery, kind: &str, error: &str) -> Result<()> {
        tracing::warn!(queue = %self.queue.name, kind, error, "dead-lettering one message of a batch");
        let (original_key, properties) =
            dead_letter_properties(delivery, &self.queue.name, kind, error, 1);
        self.publisher
            .publish_raw(
                &self.broker.topology().dead_exchange(),
                &original_key,
                &delivery.data,
                properties,
                true,
            )
            .await
    }

    async fn start(&self, channel: &Channel) -> Result<lapin::Consumer> {
        start_consuming(
            channel,
            &self.queue.name,
            self.options.effective_prefetch(),
            &self.options.consumer_tag,
        )
        .await
    }

    /// The metrics this consumer reports into.
    pub fn metrics(&self) -> &ConsumerMetrics {
        &self.metrics
    }
}

impl<H: BatchHandler> Session for BatchConsumer<H> {
    fn name(&self) -> &str {
        &self.queue.name
    }

    async fn run_session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        self.session(channel, shutdown).await
    }
}

/// What [`next_batch`] collected.
pub(crate) enum NextBatch {
    /// At least one delivery.
    Batch(Vec<Delivery>),
    /// Shutdown came before the first delivery.
    Stopped,
    /// The channel failed (whatever was collected is redelivered anyway).
    Lost(Error),
}

/// Collects the next batch from `consumer`: waits as long as it takes for
/// a first delivery, then takes more until the batch holds `max_size`, or
/// `max_wait` has passed since the first one, or a stop is requested (the
/// batch in hand is then still returned, to be finished). Shared by the
/// [`BatchConsumer`] and the batch mode of the [`Consumer`](crate::Consumer).
pub(crate) async fn next_batch(
    consumer: &mut lapin::Consumer,
    queue: &str,
    max_size: usize,
    max_wait: Duration,
    shutdown: &CancellationToken,
) -> NextBatch {
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => return NextBatch::Stopped,
        next = consumer.next() => next,
    };
    let first = match first {
        Some(Ok(delivery)) => delivery,
        Some(Err(error)) => return NextBatch::Lost(error.into()),
        None => return NextBatch::Lost(Error::ConsumerCancelled(queue.to_owned())),
    };
    let max_size = max_size.max(1);
    let mut batch = Vec::with_capacity(max_size);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + max_wait;
    while batch.len() < max_size {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => batch.push(delivery),
                // The channel is gone: acks would fail, and the broker
                // redelivers everything unacknowledged anyway.
                Some(Err(error)) => return NextBatch::Lost(error.into()),
                None => return NextBatch::Lost(Error::ConsumerCancelled(queue.to_owned())),
            },
        }
    }
    NextBatch::Batch(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_size: usize, prefetch: u16) -> BatchOptions {
        BatchOptions {
            max_size,
            max_wait: Duration::from_millis(50),
            prefetch,
            consumer_tag: "t".to_owned(),
        }
    }

    #[test]
    fn prefetch_is_raised_to_a_full_batch() {
        assert_eq!(options(500, 16).effective_prefetch(), 500);
        assert_eq!(options(10, 64).effective_prefetch(), 64);
        assert_eq!(options(0, 0).effective_prefetch(), 1);
        assert_eq!(options(1_000_000, 16).effective_prefetch(), u16::MAX);
    }
}
