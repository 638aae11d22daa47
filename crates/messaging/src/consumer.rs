//! The consumer runner: drains one queue into a [`Handler`] with explicit
//! prefetch, bounded concurrency, ack-after-success, retries through delay
//! queues, dead-lettering, reconnection and graceful shutdown.
//!
//! In batch mode ([`Consumer::with_batches`], ADR 0026) deliveries are
//! collected into batches for [`Handler::handle_batch`], several batches in
//! flight, and each message is settled by its own result exactly as in the
//! one-at-a-time mode.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::{NextBatch, next_batch};
use crate::connection::Broker;
use crate::error::{Error, Result};
use crate::metrics::{ConsumerMetrics, Outcome};
use crate::publisher::Publisher;
use crate::retry::RetryDecision;
use crate::session::{Session, SessionEnd, run_sessions, start_consuming};
use crate::topology::QueueSpec;
use crate::trace::{header_str, set_parent_from_headers};

/// Header with the 1-based attempt number (absent on the first delivery).
pub const ATTEMPT_HEADER: &str = "x-keel-attempt";
/// Why a message was dead-lettered: `retries-exhausted`, `permanent` or
/// `undecodable`.
pub const DEATH_REASON_HEADER: &str = "x-keel-death-reason";
/// The last handler error, as text.
pub const LAST_ERROR_HEADER: &str = "x-keel-last-error";
/// The routing key the message was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-keel-original-routing-key";
/// The queue the message was consumed from when it died.
pub const QUEUE_HEADER: &str = "x-keel-queue";

/// The maximum length kept of an error message in a header.
const MAX_ERROR_LEN: usize = 1024;

/// Why a handler did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed later (a dependency is down, a lock timed out): retry
    /// on the policy's schedule.
    #[error("transient: {0}")]
    Transient(#[source] BoxError),
    /// Will never succeed (invalid data, unknown entity): dead-letter now.
    #[error("permanent: {0}")]
    Permanent(#[source] BoxError),
    /// A dependency every message needs (PostgreSQL) cannot be reached:
    /// nothing is wrong with the message. The runner keeps it in hand and
    /// tries it again after a growing pause, until the dependency is back or
    /// the consumer stops; the attempt does not count towards the retry
    /// schedule nor the queue's delivery limit (ADR 0022), so an outage of
    /// any length dead-letters nothing.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

/// Any error, boxed: what a handler failure carries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl HandlerError {
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }
}

/// A body that is not the expected message is a permanent failure:
/// retrying cannot change its bytes.
impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> Self {
        Self::Permanent(Box::new(error))
    }
}

/// The body did not deserialise into the requested type.
#[derive(Debug, thiserror::Error)]
#[error("message body does not decode as the expected type")]
pub struct DecodeError(#[from] serde_json::Error);

/// One delivery, as a handler sees it.
#[derive(Debug)]
pub struct Incoming {
    id: Uuid,
    message_type: String,
    body: Vec<u8>,
    attempt: u32,
    redelivered: bool,
    routing_key: String,
    headers: FieldTable,
}

impl Incoming {
    /// The envelope id (AMQP `message_id`): de-duplicate on it.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The envelope type, e.g. `webhook.process`.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// 1 on the first try, then 2, 3, ... after each transient failure.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The broker delivered this before without an ack (a consumer died or
    /// shut down mid-message): the handler may have run already.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The routing key the message was first published with.
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    pub fn headers(&self) -> &FieldTable {
        &self.headers
    }

    /// Deserialises the body, e.g. as `Envelope<Job>`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Reads what the runner needs; `Err` means the message cannot be
    /// handled at all (no usable id).
    pub(crate) fn from_delivery(delivery: &Delivery) -> Result<Self, String> {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let id = match delivery.properties.message_id() {
            Some(id) => Uuid::parse_str(id.as_str()).map_err(|e| format!("message_id: {e}"))?,
            // A producer that did not set message_id: fall back to the
            // envelope's own id.
            None => {
                #[derive(serde::Deserialize)]
                struct IdOnly {
                    id: Uuid,
                }
                serde_json::from_slice::<IdOnly>(&delivery.data)
                    .map_err(|e| format!("body has no envelope id: {e}"))?
                    .id
            }
        };
        let attempt = headers
            .inner()
            .get(ATTEMPT_HEADER)
            .and_then(integer)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1);
        let routing_key = header_str(&headers, ORIGINAL_ROUTING_KEY_HEADER)
            .map(str::to_owned)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        Ok(Self {
            id,
            message_type: delivery
                .properties
                .kind()
                .as_ref()
                .map(|kind| kind.as_str().to_owned())
                .unwrap_or_default(),
            body: delivery.data.clone(),
            attempt,
            redelivered: delivery.redelivered,
            routing_key,
            headers,
        })
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// Application code run for each message. Commit the handler's own
/// transaction before returning `Ok`: the ack follows, and a crash in
/// between means a redelivery (de-duplicate with the inbox).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: &Incoming) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Handles several messages at once, for a consumer in batch mode
    /// ([`Consumer::with_batches`]): one result per message, in order, each
    /// settled as [`handle`](Self::handle)'s would be (ack, retry tier,
    /// dead letter; `Unavailable` holds that message). A handler that can
    /// apply many messages in one transaction overrides this; the default
    /// handles them one after the other.
    fn handle_batch(
        &self,
        messages: &[Incoming],
    ) -> impl Future<Output = Vec<Result<(), HandlerError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.handle(message).await);
            }
            results
        }
    }
}

/// The batch mode of a [`Consumer`]: deliveries are collected into batches
/// (as the [`BatchConsumer`](crate::BatchConsumer) collects them) and given
/// to [`Handler::handle_batch`], several batches in flight at once; each
/// message is then settled on its own, exactly as in the one-at-a-time
/// mode (its attempt, retry tiers, dead letter, holding on `Unavailable`).
#[derive(Debug, Clone)]
pub struct JobBatches {
    /// Most deliveries in one batch.
    pub max_size: usize,
    /// Longest a batch waits for more deliveries after its first one.
    pub max_wait: Duration,
    /// Batches handled at once (the consumer's `concurrency` is not used
    /// in this mode).
    pub in_flight: usize,
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Unacknowledged deliveries the broker may push ahead (defaults to
    /// `amqp.prefetch`).
    pub prefetch: u16,
    /// Handlers running at once (at most `prefetch` are useful).
    pub concurrency: usize,
    /// On shutdown, how long in-flight handlers get to finish before the
    /// channel is closed and their messages return to the queue.
    pub grace_period: Duration,
    /// Shown in the management UI; also the span name prefix.
    pub consumer_tag: String,
}

impl ConsumerOptions {
    pub fn from_settings(settings: &crate::AmqpSettings, consumer_tag: impl Into<String>) -> Self {
        Self {
            prefetch: settings.prefetch,
            concurrency: usize::from(settings.prefetch),
            grace_period: Duration::from_secs(30),
            consumer_tag: consumer_tag.into(),
        }
    }
}

/// Drains one queue into a handler until told to stop.
#[derive(Debug)]
pub struct Consumer<H> {
    broker: Broker,
    queue: QueueSpec,
    options: ConsumerOptions,
    /// Set: batch mode ([`Consumer::with_batches`]).
    batches: Option<JobBatches>,
    metrics: ConsumerMetrics,
    shared: Arc<Shared<H>>,
}

#[derive(Debug)]
struct Shared<H> {
    handler: H,
    publisher: Publisher,
    broker: Broker,
    queue: QueueSpec,
    metrics: ConsumerMetrics,
}

impl<H: Handler> Consumer<H> {
    pub fn new(
        broker: Broker,
        queue: QueueSpec,
        handler: H,
        options: ConsumerOptions,
        metrics: ConsumerMetrics,
    ) -> Self {
        let shared = Arc::new(Shared {
            handler,
            publisher: Publisher::new(broker.clone()),
            broker: broker.clone(),
            queue: queue.clone(),
            metrics: metrics.clone(),
        });
        Self {
            broker,
            queue,
            options,
            batches: None,
            metrics,
            shared,
        }
    }

    /// Switches to batch mode: deliveries go to [`Handler::handle_batch`]
    /// in batches of up to `batches.max_size`, `batches.in_flight` at once.
    /// The prefetch should hold that many batches, or they will not fill.
    pub fn with_batches(mut self, batches: JobBatches) -> Self {
        self.batches = Some(batches);
        self
    }

    /// Runs until `shutdown` is cancelled, reconnecting with backoff
    /// whenever the broker goes away. On shutdown: no new deliveries
    /// (basic.cancel), in-flight handlers finish (up to the grace period),
    /// then the channel closes so anything unacknowledged is redelivered.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        run_sessions(&self.broker, &self, &shutdown).await;
        Ok(())
    }

    async fn session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        let mut consumer = match self.start(&channel).await {
            Ok(consumer) => consumer,
            Err(error) => return SessionEnd::Failed(error),
        };
        tracing::info!(queue = %self.queue.name, batches = ?self.batches, "consuming");
        let tracker = TaskTracker::new();
        let tag = consumer.tag();

        let end = match &self.batches {
            None => self.each(&mut consumer, &tracker, shutdown).await,
            Some(batches) => {
                self.batched(&mut consumer, &tracker, batches, shutdown)
                    .await
            }
        };
        if matches!(end, SessionEnd::Stopped) {
            // Stop the flow first; deliveries already buffered are never
            // handed out and return on channel close.
            let cancel = channel.basic_cancel(
                tag,
                // Wait for cancel-ok: after it, nothing new arrives.
                BasicCancelOptions { nowait: false },
            );
            if let Err(error) = cancel.await {
                tracing::warn!(error = %error, "basic.cancel failed");
            }
        }

        tracker.close();
        if tokio::time::timeout(self.options.grace_period, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                queue = %self.queue.name,
                still_running = tracker.len(),
                "grace period over; unfinished messages go back to the queue"
            );
        }
        // Closing the channel returns every unacknowledged delivery
        // (buffered or abandoned) to the queue.
        if channel.status().connected()
            && let Err(error) = channel
                .close(200, ShortString::from("consumer stopped"))
                .await
        {
            tracing::debug!(error = %error, "closing the consumer channel failed");
        }
        if matches!(end, SessionEnd::Stopped) {
            tracing::info!(queue = %self.queue.name, "consumer stopped");
        }
        end
    }

    /// One message at a time per slot, `concurrency` slots.
    async fn each(
        &self,
        consumer: &mut lapin::Consumer,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let permits = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        loop {
            tokio::select! {
                // Shutdown wins over a delivery that is ready at the same
                // time: that delivery stays unacked and is redelivered.
                biased;
                () = shutdown.cancelled() => return SessionEnd::Stopped,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        // Wait for a free slot; prefetch bounds how many
                        // deliveries can queue up behind this one.
                        let permit = tokio::select! {
                            biased;
                            () = shutdown.cancelled() => continue,
                            permit = permits.clone().acquire_owned() => permit,
                        };
                        let Ok(permit) = permit else { continue };
                        let shared = self.shared.clone();
                        let shutdown = shutdown.clone();
                        tracker.spawn(async move {
                            shared.process(delivery, &shutdown).await;
                            drop(permit);
                        });
                    }
                    Some(Err(error)) => return SessionEnd::Lost(error.into()),
                    None => return SessionEnd::Lost(Error::ConsumerCancelled(self.queue.name.clone())),
                },
            }
        }
    }

    /// Batch mode: collect a batch, wait for one of `in_flight` slots,
    /// hand it to a task; the next batch is collected meanwhile.
    async fn batched(
        &self,
        consumer: &mut lapin::Consumer,
        tracker: &TaskTracker,
        batches: &JobBatches,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let permits = Arc::new(Semaphore::new(batches.in_flight.max(1)));
        loop {
            // A slot first, so a batch is not collected (and its first
            // delivery's wait started) before it can run.
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => return SessionEnd::Stopped,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else {
                return SessionEnd::Stopped;
            };
            let batch = match next_batch(
                consumer,
                &self.queue.name,
                batches.max_size,
                batches.max_wait,
                shutdown,
            )
            .await
            {
                NextBatch::Batch(batch) => batch,
                NextBatch::Stopped => return SessionEnd::Stopped,
                NextBatch::Lost(error) => return SessionEnd::Lost(error),
            };
            let shared = self.shared.clone();
            let task_shutdown = shutdown.clone();
            tracker.spawn(async move {
                shared.process_batch(batch, &task_shutdown).await;
                drop(permit);
            });
            if shutdown.is_cancelled() {
                // The batch collected when the stop came is finished; no
                // new one starts.
                return SessionEnd::Stopped;
            }
        }
    }

    async fn start(&self, channel: &Channel) -> Result<lapin::Consumer> {
        start_consuming(
            channel,
            &self.queue.name,
            self.options.prefetch,
            &self.options.consumer_tag,
        )
        .await
    }

    /// The metrics this consumer reports into.
    pub fn metrics(&self) -> &ConsumerMetrics {
        &self.metrics
    }
}

impl<H: Handler> Session for Consumer<H> {
    fn name(&self) -> &str {
        &self.queue.name
    }

    async fn run_session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        self.session(channel, shutdown).await
    }
}

impl<H: Handler> Shared<H> {
    /// Runs the handler; while it answers [`HandlerError::Unavailable`] the
    /// message stays in hand (unacknowledged, its attempt unchanged) and is
    /// tried again after a growing pause, so an outage consumes none of its
    /// retries. Returns `Unavailable` only when `shutdown` ends the wait.
    async fn handle_while_available(
        &self,
        message: &Incoming,
        shutdown: &CancellationToken,
    ) -> Result<(), HandlerError> {
        let mut outages = 0u32;
        loop {
            // A panicking handler must not leave its delivery unacked for
            // the life of the channel: treat it as a transient failure
            // (retried, then dead-lettered).
            let result = AssertUnwindSafe(self.handler.handle(message))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::transient("the handler panicked")));
            let Err(HandlerError::Unavailable(error)) = result else {
                return result;
            };
            outages = outages.saturating_add(1);
            self.metrics.held(self.queue.name.as_str());
            let delay = self.broker.settings().reconnect.delay(outages);
            tracing::warn!(error = %error, ?delay, outages, "a dependency is unavailable; holding the message");
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(HandlerError::Unavailable(error)),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn process(&self, delivery: Delivery, shutdown: &CancellationToken) {
        let queue = self.queue.name.as_str();
        self.metrics.in_flight(queue, 1);
        let started = Instant::now();
        let outcome = match Incoming::from_delivery(&delivery) {
            Err(reason) => self.dead_letter(&delivery, "undecodable", &reason, 1).await,
            Ok(message) => {
                let span = tracing::info_span!(
                    "amqp.consume",
                    otel.kind = "consumer",
                    messaging.destination = %queue,
                    messaging.message.id = %message.id,
                    message_type = %message.message_type,
                    attempt = message.attempt,
                );
                set_parent_from_headers(&span, &message.headers);
                async {
                    let result = self.handle_while_available(&message, shutdown).await;
                    self.metrics
                        .observe_duration(queue, started.elapsed().as_secs_f64());
                    self.settle(&delivery, &message, result).await
                }
                .instrument(span)
                .await
            }
        };
        self.metrics.outcome(queue, outcome);
        self.metrics.in_flight(queue, -1);
    }

    /// Batch mode: handles `batch` through [`Handler::handle_batch`] and
    /// settles each message by its own result, as [`process`](Self::process)
    /// would. The messages answered `Unavailable` stay in hand and are
    /// handled again (as a smaller batch) after a growing pause, their
    /// attempts unspent (ADR 0022), while the others are settled at once.
    async fn process_batch(&self, batch: Vec<Delivery>, shutdown: &CancellationToken) {
        let queue = self.queue.name.as_str();
        let size = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        self.metrics.in_flight(queue, size);
        let started = Instant::now();
        let span = tracing::info_span!(
            "amqp.consume.batch",
            otel.kind = "consumer",
            messaging.destination = %queue,
            messaging.batch.message_count = batch.len(),
        );
        async {
            let mut deliveries = Vec::with_capacity(batch.len());
            let mut messages = Vec::with_capacity(batch.len());
            for delivery in batch {
                match Incoming::from_delivery(&delivery) {
                    Err(reason) => {
                        let outcome = self.dead_letter(&delivery, "undecodable", &reason, 1).await;
                        self.metrics.outcome(queue, outcome);
                    }
                    Ok(message) => {
                        deliveries.push(delivery);
                        messages.push(message);
                    }
                }
            }
            let mut outages = 0u32;
            while !messages.is_empty() {
                let results = AssertUnwindSafe(self.handler.handle_batch(&messages))
                    .catch_unwind()
                    .await
                    .unwrap_or_default();
                let mut results = results.into_iter();
                let mut held_deliveries = Vec::new();
                let mut held_messages = Vec::new();
                let mut unavailable = None;
                for (delivery, message) in deliveries.into_iter().zip(messages) {
                    // A panic, or a handler that answered fewer results
                    // than messages: what is missing failed transiently.
                    let result = results.next().unwrap_or_else(|| {
                        Err(HandlerError::transient("the batch handler panicked"))
                    });
                    match result {
                        Err(HandlerError::Unavailable(error)) => {
                            unavailable = Some(error);
                            held_deliveries.push(delivery);
                            held_messages.push(message);
                        }
                        result => {
                            self.metrics
                                .observe_duration(queue, started.elapsed().as_secs_f64());
                            let outcome = self.settle(&delivery, &message, result).await;
                            self.metrics.outcome(queue, outcome);
                        }
                    }
                }
                deliveries = held_deliveries;
                messages = held_messages;
                let Some(error) = unavailable else { break };
                outages = outages.saturating_add(1);
                self.metrics.held(queue);
                let delay = self.broker.settings().reconnect.delay(outages);
                tracing::warn!(queue, error = %error, held = messages.len(), ?delay, outages, "a dependency is unavailable; holding the batch");
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        // Left unacked: the channel's close returns them to
                        // the queue without a retry or a dead letter.
                        tracing::info!(held = messages.len(), "stopping while a dependency is down; the held messages return to their queue");
                        for _ in &messages {
                            self.metrics.outcome(queue, Outcome::Requeued);
                        }
                        break;
                    }
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        .instrument(span)
        .await;
        self.metrics.in_flight(queue, -size);
    }

    /// Settles one delivery by its handler's `result`: ack, dead letter or
    /// retry tier (`Unavailable` only reaches here at shutdown: left unacked).
    async fn settle(
        &self,
        delivery: &Delivery,
        message: &Incoming,
        result: Result<(), HandlerError>,
    ) -> Outcome {
        match result {
            Ok(()) => self.ack(delivery, Outcome::Ok).await,
            Err(HandlerError::Unavailable(error)) => {
                // Only at shutdown: leave it unacked, the channel's close
                // returns it to the queue without a retry or a dead letter.
                tracing::info!(error = %error, "stopping while a dependency is down; the message returns to its queue");
                Outcome::Requeued
            }
            Err(HandlerError::Permanent(error)) => {
                tracing::warn!(error = %error, "permanent failure; dead-lettering");
                let error = error.to_string();
                self.dead_letter(delivery, "permanent", &error, message.attempt)
                    .await
            }
            Err(HandlerError::Transient(error)) => {
                self.retry(delivery, message, &error.to_string()).await
            }
        }
    }

    async fn retry(&self, delivery: &Delivery, message: &Incoming, error: &str) -> Outcome {
        let policy = &self.broker.settings().retry;
        // Decide before any await: the thread-local RNG is not `Send`.
        let decision = policy.after_failure(message.attempt, &mut rand::rng());
        match decision {
            RetryDecision::Exhausted => {
                tracing::warn!(error, "last attempt failed; dead-lettering");
                self.dead_letter(delivery, "retries-exhausted", error, message.attempt)
                    .await
            }
            RetryDecision::Retry {
                tier,
                delay,
                next_attempt,
            } => {
                tracing::info!(error, ?delay, next_attempt, "transient failure; retrying");
                let mut headers = message.headers.clone();
                headers.insert(
                    ATTEMPT_HEADER.into(),
                    AMQPValue::LongLongInt(i64::from(next_attempt)),
                );
                headers.insert(LAST_ERROR_HEADER.into(), long_string(error));
                headers.insert(
                    ORIGINAL_ROUTING_KEY_HEADER.into(),
                    long_string(&message.routing_key),
                );
                let properties = copy_properties(&delivery.properties, headers)
                    // Per-message TTL: the jittered delay, never longer than
                    // the tier queue's own TTL.
                    .with_expiration(ShortString::from(delay.as_millis().to_string()));
                let exchange = self.broker.topology().retry_exchange(tier);
                // The key under which the delay queue dead-letters it back
                // to `{ns}.jobs`: this queue's own return key.
                let published = self
                    .publisher
                    .publish_raw(
                        &exchange,
                        &self.queue.retry_routing_key,
                        &delivery.data,
                        properties,
                        true,
                    )
                    .await;
                match published {
                    Ok(()) => self.ack(delivery, Outcome::Retried).await,
                    Err(error) => self.requeue(delivery, &error).await,
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        error: &str,
        attempt: u32,
    ) -> Outcome {
        let (original_key, properties) =
            dead_letter_properties(delivery, &self.queue.name, reason, error, attempt);
        let published = self
            .publisher
            .publish_raw(
                &self.broker.topology().dead_exchange(),
                &original_key,
                &delivery.data,
                properties,
                // The dead exchange fans out to the dead queue; a message
                // that reaches no queue there is a bug worth failing on.
                true,
            )
            .await;
        match published {
            Ok(()) => self.ack(delivery, Outcome::Dead).await,
            Err(error) => self.requeue(delivery, &error).await,
        }
    }

    async fn ack(&self, delivery: &Delivery, outcome: Outcome) -> Outcome {
        // Single ack (`multiple: false`): other deliveries may still be in
        // flight on this channel.
        if let Err(error) = delivery
            .acker
            .ack(BasicAckOptions { multiple: false })
            .await
        {
            // The channel is gone: the broker redelivers the message, and the
            // handler's de-duplication makes that harmless.
            tracing::warn!(error = %error, "ack failed; the message will be redelivered");
            return Outcome::Requeued;
        }
        outcome
    }

    /// Neither retry nor dead-letter could be published: put the message
    /// back rather than lose it.
    async fn requeue(&self, delivery: &Delivery, error: &Error) -> Outcome {
        tracing::warn!(error = %error, "could not reroute the message; requeueing");
        let nack = delivery.acker.nack(BasicNackOptions {
            multiple: false,
            // Back to its queue (counts towards x-delivery-limit).
            requeue: true,
        });
        if let Err(error) = nack.await {
            tracing::warn!(error = %error, "nack failed; the message will be redelivered");
        }
        Outcome::Requeued
    }
}

/// Where a dead letter of `delivery` goes and what it carries: its
/// original routing key, and its properties with the headers that say why
/// it died (the dead-letter contract both consumer runners publish).
pub(crate) fn dead_letter_properties(
    delivery: &Delivery,
    queue: &str,
    reason: &str,
    error: &str,
    attempt: u32,
) -> (String, BasicProperties) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let original_key = header_str(&headers, ORIGINAL_ROUTING_KEY_HEADER)
        .map(str::to_owned)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    headers.insert(DEATH_REASON_HEADER.into(), long_string(reason));
    headers.insert(LAST_ERROR_HEADER.into(), long_string(error));
    headers.insert(
        ORIGINAL_ROUTING_KEY_HEADER.into(),
        long_string(&original_key),
    );
    headers.insert(QUEUE_HEADER.into(), long_string(queue));
    headers.insert(
        ATTEMPT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    let properties = copy_properties(&delivery.properties, headers);
    (original_key, properties)
}

fn long_string(value: &str) -> AMQPValue {
    let value = if value.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        &value[..end]
    } else {
        value
    };
    AMQPValue::LongString(LongString::from(value))
}

/// The original message's properties with new headers.
fn copy_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2);
    if let Some(id) = original.message_id() {
        properties = properties.with_message_id(id.clone());
    }
    if let Some(kind) = original.kind() {
        properties = properties.with_type(kind.clone());
    }
    if let Some(timestamp) = original.timestamp() {
        properties = properties.with_timestamp(*timestamp);
    }
    properties
}
