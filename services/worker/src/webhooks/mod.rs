//! Applying captured webhooks: the [`Handler`] of `{ns}.jobs.webhook`.
//!
//! # Layout
//! - this module: [`WebhookHandler`] — decode the job, read the event,
//!   decide what it means, apply it in one transaction with the event's
//!   outcome, record failed attempts.
//! - [`shopify`]: the order payload (and its version, `updated_at`) and
//!   the Admin API's fulfilments.
//! - [`stripe`]: `payment_intent.succeeded`, the order it pays and what it
//!   collected.
//! - [`money`]: decimal amounts to minor units.
//! - [`error`]: [`error::ProcessingError`], each cause classed transient or
//!   permanent.
//!
//! One job, step by step (design: `docs/adr/0014-webhook-processing.md`):
//! 1. read the event without a lock; `processed` / `ignored` → ack, skip;
//! 2. parse the payload into an action (a bad payload is permanent);
//! 3. call the third party if the action needs it (no transaction open:
//!    a slow API holds no row lock and no connection);
//! 4. one transaction: lock the event row (lock timeout → transient),
//!    skip if another worker finished it meanwhile, apply the action
//!    (domain events through the outbox), mark the event, commit;
//! 5. after the commit, wake the outbox relays: the `order.*` events they
//!    publish are also how the gateway's order cache learns of the change
//!    (the gateway owns that cache; ADR 0009).
//!
//! On failure, count the attempt and keep its error on the event, marking
//! it `failed` when no retry follows.
//!
//! Two business rules hold whatever the payload says (and whatever way it
//! arrives: a retry, an admin's replay, a captured body re-sent under a
//! fresh delivery id):
//! - a payment marks an order paid only for the order's amount and
//!   currency; another one fails the event permanently, its `last_error`
//!   saying what did not match;
//! - a Shopify order older than the stored one (its `updated_at`) changes
//!   nothing: the event ends `ignored`, its `last_error` saying why; so
//!   does a Stripe confirmation not newer (its `created`) than the one
//!   that paid the order, whatever the order's status since (ADR 0025).

mod batch;
pub mod error;
pub mod money;
pub mod shopify;
pub mod stripe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use keel_commerce::orders::domain::{ExternalOrder, FulfillmentStatus, Order};
use keel_commerce::orders::{self, Applied, Change};
use keel_contracts::{Envelope, Job};
use keel_db::Pool;
use keel_messaging::{Handler, HandlerError, Incoming};
use keel_outbox::RelayWaker;
use keel_webhooks::Scheme;
use keel_webhooks::process::{self, Outcome, StoredEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::settings::WebhooksSettings;
use crate::webhooks::error::ProcessingError;
use crate::webhooks::shopify::{ShopifyApi, ShopifyOrder};
use crate::webhooks::stripe::PaidIntent;

/// What an event asks for, decided from its source, topic and payload
/// before any transaction opens.
#[derive(Debug)]
enum Action {
    /// Shopify `orders/create` / `orders/updated` (`topic`) of the order's
    /// `version`, with the fulfilment status read from the Admin API (when
    /// one is configured).
    UpsertOrder {
        topic: String,
        order: ExternalOrder,
        version: Option<DateTime<Utc>>,
        fulfillment: Option<FulfillmentStatus>,
    },
    /// Stripe `payment_intent.succeeded`.
    MarkPaid(PaidIntent),
    /// Stored only.
    Ignore,
}

/// How a job ended, for the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Processed,
    Ignored,
    /// Already processed or ignored: a redelivery, a duplicate job.
    Skipped,
}

impl JobEnd {
    /// The metric's `outcome` label.
    fn as_str(self) -> &'static str {
        match self {
            JobEnd::Processed => "processed",
            JobEnd::Ignored => "ignored",
            JobEnd::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    source: String,
    /// `processed`, `ignored`, `skipped`, `retried`, `failed`.
    outcome: String,
}

/// `keel_webhook_events_handled_total{source, outcome}`: what processing
/// did with each event (the consumer runner's `keel_messages_handled_total`
/// counts the deliveries).
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    events: Family<EventLabels, Counter>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "webhook_events_handled",
            "Webhook events taken from the queue, by source and outcome (processed, ignored, skipped, retried, failed)",
            metrics.events.clone(),
        );
        metrics
    }

    fn count(&self, source: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Events of `source` that ended with `outcome` so far (tests).
    pub fn handled(&self, source: &str, outcome: &str) -> u64 {
        self.events
            .get(&EventLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .map_or(0, |counter| counter.get())
    }
}

/// The `jobs.webhook` handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    sources: HashMap<String, Scheme>,
    shopify: Option<ShopifyApi>,
    /// The domain events' outbox rows carry no NOTIFY (it would serialise
    /// the commits of concurrent jobs): the relays are woken after commit.
    relays: RelayWaker,
    /// Attempts a job gets (`amqp.retry`): the last failure marks `failed`.
    max_attempts: u32,
    metrics: WebhookMetrics,
}

impl WebhookHandler {
    /// `relays` is woken after every commit that wrote outbox rows: the
    /// process's own relay (`Relay::waker`) in the service.
    pub fn new(
        pool: Pool,
        relays: RelayWaker,
        settings: &WebhooksSettings,
        shopify: Option<ShopifyApi>,
        max_attempts: u32,
        metrics: WebhookMetrics,
    ) -> Self {
        let sources = settings
            .sources
            .iter()
            .map(|(name, source)| (name.clone(), source.scheme))
            .collect();
        Self {
            inner: Arc::new(Inner {
                relays,
                pool,
                sources,
                shopify,
                max_attempts,
                metrics,
            }),
        }
    }

    /// Processes one event as a job would, without the failure
    /// bookkeeping (tests drive it directly).
    pub async fn process(&self, event_id: Uuid) -> Result<JobEnd, ProcessingError> {
        self.process_event(event_id, &mut None).await
    }

    /// [`process`](Self::process), reporting the event's source into
    /// `source` as soon as it is known (for the metric's label).
    async fn process_event(
        &self,
        event_id: Uuid,
        source: &mut Option<String>,
    ) -> Result<JobEnd, ProcessingError> {
        let inner = &self.inner;
        let client = inner.pool.get().await.map_err(keel_db::Error::from)?;
        let event = process::load(&client, event_id)
            .await?
            .ok_or(ProcessingError::UnknownEvent(event_id))?;
        *source = Some(event.source.clone());
        if event.status.is_done() {
            return Ok(JobEnd::Skipped);
        }
        let action = self.decide(&event).await?;
        // The connection is held again only for the transaction below.
        drop(client);

        let mut client = inner.pool.get().await.map_err(keel_db::Error::from)?;
        let tx = client.transaction().await.map_err(keel_db::Error::from)?;
        let locked = process::lock(&tx, event_id)
            .await?
            .ok_or(ProcessingError::UnknownEvent(event_id))?;
        if locked.status.is_done() {
            // Another worker finished it while this one was deciding.
            return Ok(JobEnd::Skipped);
        }
        let (outcome, changed, note) = apply(&tx, action).await?;
        match &note {
            Some(note) => process::finish_with_note(&tx, event_id, outcome, note).await?,
            None => process::finish(&tx, event_id, outcome).await?,
        }
        tx.commit().await.map_err(keel_db::Error::from)?;

        if !changed.is_empty() {
            inner.relays.wake();
        }
        if let Some(note) = &note {
            tracing::info!(event_id = %event_id, note = %note, "webhook event ignored");
        }
        Ok(match outcome {
            Outcome::Processed => JobEnd::Processed,
            Outcome::Ignored => JobEnd::Ignored,
        })
    }

    /// What `event` asks for; calls the third party's API when the action
    /// needs its answer.
    async fn decide(&self, event: &StoredEvent) -> Result<Action, ProcessingError> {
        let scheme = *self
            .inner
            .sources
            .get(&event.source)
            .ok_or_else(|| ProcessingError::UnknownSource(event.source.clone()))?;
        let topic = event.topic.as_deref().unwrap_or_default();
        match scheme {
            Scheme::Shopify if shopify::ORDER_TOPICS.contains(&topic) => {
                let payload = ShopifyOrder::parse(&event.body)?;
                let order = payload.to_external(&event.source)?;
                let version = payload.version()?;
                let fulfillment = match &self.inner.shopify {
                    Some(api) => Some(api.fulfillment_status(payload.id).await?),
                    None => None,
                };
                Ok(Action::UpsertOrder {
                    topic: topic.to_owned(),
                    order,
                    version,
                    fulfillment,
                })
            }
            Scheme::Stripe if topic == stripe::PAYMENT_SUCCEEDED => {
                Ok(Action::MarkPaid(stripe::paid_intent(&event.body)?))
            }
            _ => Ok(Action::Ignore),
        }
    }
}

/// Applies `action` in `tx`; returns the event's outcome, the orders that
/// changed (their domain events are in the outbox already) and, for an
/// event ignored although it could have applied, why.
async fn apply(
    tx: &keel_db::Transaction<'_>,
    action: Action,
) -> Result<(Outcome, Vec<Order>, Option<String>), ProcessingError> {
    let mut changed = Vec::new();
    let mut keep = |applied: Applied| {
        if applied.changed() {
            changed.push(applied.order.clone());
        }
        applied.order
    };
    match action {
        Action::UpsertOrder {
            topic,
            order,
            version,
            fulfillment,
        } => {
            let applied = orders::upsert_external_as_of(tx, &order, version).await?;
            if let Change::Stale { stored } = applied.change {
                // Nothing of an older version applies, its fulfilment
                // status included: the newer event recorded its own.
                let note = stale_note(&topic, "updated_at", version, stored);
                return Ok((Outcome::Ignored, Vec::new(), Some(note)));
            }
            let stored = keep(applied);
            if let Some(status) = fulfillment {
                keep(orders::record_fulfillment(tx, stored.id, &status).await?);
            }
        }
        Action::MarkPaid(PaidIntent {
            order_id,
            payment,
            version,
        }) => {
            let applied = orders::mark_paid_as_of(tx, order_id, &payment, version)
                .await
                .map_err(|e| ProcessingError::paying(order_id, e))?;
            if let Change::Stale { stored } = applied.change {
                let note = stale_note(stripe::PAYMENT_SUCCEEDED, "created", version, stored);
                return Ok((Outcome::Ignored, Vec::new(), Some(note)));
            }
            keep(applied);
        }
        Action::Ignore => return Ok((Outcome::Ignored, changed, None)),
    }
    Ok((Outcome::Processed, changed, None))
}

/// Why an event of `version` (the payload's `field`) was not applied over
/// the order's `stored` one.
fn stale_note(
    topic: &str,
    field: &str,
    version: Option<DateTime<Utc>>,
    stored: Option<DateTime<Utc>>,
) -> String {
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let version = version.map_or_else(|| format!("no {field}"), |v| format!("{field} {}", at(v)));
    let stored = stored.map_or_else(|| "unknown".to_owned(), at);
    format!(
        "not applied: this {topic} has {version}, not newer than the order's stored {field} {stored}"
    )
}

impl Handler for WebhookHandler {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let event_id = Self::event_id(message)?;
        let started = Instant::now();
        let mut source = None;
        let result = self.process_event(event_id, &mut source).await;
        let source = source.unwrap_or_else(|| "unknown".to_owned());
        let inner = &self.inner;
        match result {
            Ok(end) => {
                let outcome = end.as_str();
                tracing::debug!(event_id = %event_id, outcome, elapsed = ?started.elapsed(), "webhook event handled");
                inner.metrics.count(&source, outcome);
                Ok(())
            }
            Err(error) if error.is_unavailable() => {
                // Nothing to record: the database is away. The consumer
                // holds the job, its attempt unspent, until it is back.
                inner.metrics.count(&source, "held");
                Err(HandlerError::unavailable(error))
            }
            Err(error) => Err(self.failed(message, event_id, &source, error).await),
        }
    }

    /// Batch mode (`[jobs.webhook] batch_size` > 1): see [`batch`].
    async fn handle_batch(&self, messages: &[Incoming]) -> Vec<Result<(), HandlerError>> {
        self.handle_jobs(messages).await
    }
}

impl WebhookHandler {
    /// The event a `webhook.process` job names; another body is permanent.
    fn event_id(message: &Incoming) -> Result<Uuid, HandlerError> {
        let envelope: Envelope<Job> = message.decode()?;
        let message_type = envelope.message_type();
        match envelope.body {
            Job::WebhookProcess(job) => Ok(job.event_id),
            _ => Err(HandlerError::permanent(format!(
                "{message_type} is not a webhook job"
            ))),
        }
    }

    /// The bookkeeping of a failed attempt at `event_id` (not an outage):
    /// the attempt and its error on the event, `failed` when no retry
    /// follows, the metric; returns what the consumer does with the job.
    async fn failed(
        &self,
        message: &Incoming,
        event_id: Uuid,
        source: &str,
        error: ProcessingError,
    ) -> HandlerError {
        let inner = &self.inner;
        let permanent = !error.is_transient();
        let last = permanent || message.attempt() >= inner.max_attempts;
        let text = error.to_string();
        if !matches!(error, ProcessingError::UnknownEvent(_)) {
            self.record_failure(event_id, &text, last).await;
        }
        inner
            .metrics
            .count(source, if last { "failed" } else { "retried" });
        if permanent {
            HandlerError::permanent(error)
        } else {
            HandlerError::transient(error)
        }
    }

    /// Counts the failed attempt on the event. Best effort: when the
    /// database itself is what failed, this fails too, and the job's own
    /// retry (or its dead letter) is what remains.
    async fn record_failure(&self, event_id: Uuid, error: &str, last: bool) {
        let recorded = match self.inner.pool.get().await {
            Ok(client) => process::record_failure(&client, event_id, error, last)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = recorded {
            tracing::warn!(event_id = %event_id, error = %e, "could not record a failed webhook attempt");
        }
    }
}
