//! This instance's subscription to export events on the broker.
//!
//! Every gateway instance needs every `export.*` event (the user's stream
//! may be open on any of them), so each declares a queue of its own rather
//! than sharing one: `{ns}.events.gateway.<uuid>`, bound to `{ns}.events`
//! with `export.*`. It is per process, so it is a classic queue, exclusive
//! to this connection and deleted by the broker when the connection goes
//! (never a quorum queue: nothing in it must outlive the process, and
//! streams that miss an event catch up from PostgreSQL). After a broker
//! reconnect it is declared and bound again under a fresh name (the broker
//! may not yet have noticed the old connection die, and would refuse the
//! old exclusive name), and every open stream is told to catch up
//! (`Hub::resync`) for what was published in between.
//!
//! The same queue also carries `order.*` events when the orders area asks
//! for them ([`Subscription::with_order_changes`]): every instance must
//! evict its in-process copy of an order another service changed, so they
//! need every such event too, and one consumer loop serves both.
//!
//! It runs on the main runtime: lapin's connection I/O must live on the
//! runtime that outlives actix's workers (`keel_messaging::Broker`).

use futures::StreamExt;
use keel_contracts::{DomainEvent, Envelope};
use keel_messaging::{Broker, Session, SessionEnd};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::hub::{ExportEventKind, Hub, Notification};
use crate::orders::OrderChanges;

/// The routing keys (event types) this subscription binds.
pub const BINDING_KEY: &str = "export.*";

/// Bound as well when the orders area listens ([`OrderChanges`]).
pub const ORDER_BINDING_KEY: &str = "order.*";

/// Messages the broker keeps for this queue if the gateway stops reading
/// (the oldest are dropped past it; streams then catch up from PostgreSQL
/// when they resume). A bound on the broker's memory, never reached while
/// the subscription runs: dispatching a message never waits.
const MAX_QUEUED: i64 = 10_000;

/// Consumes export events into the [`Hub`] until shutdown.
#[derive(Debug)]
pub struct Subscription {
    broker: Broker,
    hub: Hub,
    instance: Uuid,
    orders: Option<OrderChanges>,
}

impl Subscription {
    pub fn new(broker: Broker, hub: Hub) -> Self {
        Self {
            broker,
            hub,
            instance: Uuid::new_v4(),
            orders: None,
        }
    }

    /// Also consumes `order.*` events into `orders`, and tells it whether
    /// they are being heard.
    #[must_use]
    pub fn with_order_changes(mut self, orders: OrderChanges) -> Self {
        self.orders = Some(orders);
        self
    }

    /// Runs until `shutdown` is cancelled, resubscribing through the
    /// broker's shared session loop (`amqp.reconnect` backoff, jitter)
    /// whenever the broker goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let broker = self.broker.clone();
        keel_messaging::run_sessions(&broker, &self, &shutdown).await;
    }

    async fn consume(
        &self,
        channel: &Channel,
        consumer: &mut Consumer,
        queue: String,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // The queue goes with the channel's connection; closing
                    // the channel stops the deliveries now.
                    if channel.status().connected()
                        && let Err(error) = channel.close(200, ShortString::from("gateway stopping")).await
                    {
                        tracing::debug!(error = %error, "closing the event channel failed");
                    }
                    return SessionEnd::Stopped;
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.dispatch(&delivery.data),
                    Some(Err(error)) => return SessionEnd::Lost(error.into()),
                    None => return SessionEnd::Lost(keel_messaging::Error::ConsumerCancelled(queue)),
                },
            }
        }
    }

    /// `{ns}.events.gateway.<instance>-<session>`.
    fn queue_name(&self) -> String {
        format!(
            "{}.gateway.{}-{}",
            self.broker.topology().events_exchange(),
            self.instance.simple(),
            Uuid::new_v4().simple()
        )
    }

    async fn start(&self, channel: &Channel, queue: &str) -> Result<Consumer, lapin::Error> {
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_QUEUED));
        channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    // Create it.
                    passive: false,
                    // Per process: nothing to keep across a broker restart.
                    durable: false,
                    // Only this connection may use it, and it is deleted
                    // when the connection closes (crash included).
                    exclusive: true,
                    // Also deleted once its consumer is cancelled.
                    auto_delete: true,
                    // Wait for declare-ok, so a failure surfaces here.
                    nowait: false,
                },
                arguments,
            )
            .await?;
        let keys = match self.orders {
            Some(_) => &[BINDING_KEY, ORDER_BINDING_KEY][..],
            None => &[BINDING_KEY][..],
        };
        for key in keys {
            channel
                .queue_bind(
                    ShortString::from(queue),
                    ShortString::from(self.broker.topology().events_exchange()),
                    ShortString::from(*key),
                    QueueBindOptions { nowait: false },
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(format!("gateway-events-{}", self.instance.simple())),
                BasicConsumeOptions {
                    // RabbitMQ ignores no_local; written for completeness.
                    no_local: false,
                    // Automatic acks: a notification is handed to the
                    // in-process fan-out without waiting, and one lost with
                    // this process is recovered by the client's resume from
                    // PostgreSQL, so acking each would buy nothing.
                    no_ack: true,
                    // The queue is exclusive already.
                    exclusive: true,
                    // Wait for consume-ok.
                    nowait: false,
                },
                FieldTable::default(),
            )
            .await
    }

    /// Decodes one message and hands it to the user's streams, or to the
    /// orders area.
    fn dispatch(&self, body: &[u8]) {
        if let Some(orders) = &self.orders
            && let Some(order_id) = changed_order_of(body)
        {
            orders.changed(order_id);
            return;
        }
        let Some((user, notification)) = notification_of(body) else {
            tracing::debug!(
                "ignoring a message on the event queue that is neither an export outcome nor an order change"
            );
            return;
        };
        let streams = self.hub.publish(user, notification);
        tracing::debug!(
            export_id = %notification.export_id,
            event = notification.kind.event_name(),
            streams,
            "export event fanned out"
        );
    }
}

impl Session for Subscription {
    fn name(&self) -> &str {
        "gateway event subscription"
    }

    /// One channel's life: declare, bind, consume until shutdown or until
    /// the channel dies.
    async fn run_session(&self, channel: Channel, shutdown: &CancellationToken) -> SessionEnd {
        let queue = self.queue_name();
        let mut consumer = match self.start(&channel, &queue).await {
            Ok(consumer) => consumer,
            Err(error) => return SessionEnd::Failed(error.into()),
        };
        tracing::info!(%queue, "event subscription ready");
        // Consuming already: whatever a stream replays from PostgreSQL now
        // cannot fall between its replay and the live events.
        self.hub.resync();
        if let Some(orders) = &self.orders {
            orders.listening(true);
        }
        let ended = self.consume(&channel, &mut consumer, queue, shutdown).await;
        if let Some(orders) = &self.orders {
            orders.listening(false);
        }
        ended
    }
}

/// The order an `order.created` / `order.updated` envelope is about;
/// `None` for anything else.
pub fn changed_order_of(body: &[u8]) -> Option<Uuid> {
    let envelope: Envelope<DomainEvent> = serde_json::from_slice(body).ok()?;
    match envelope.body {
        DomainEvent::OrderCreated(order) => Some(order.order_id),
        DomainEvent::OrderUpdated(update) => Some(update.order.order_id),
        _ => None,
    }
}

/// The owner and notification of an `export.completed` / `export.failed`
/// envelope; `None` for anything else.
pub fn notification_of(body: &[u8]) -> Option<(Uuid, Notification)> {
    let envelope: Envelope<DomainEvent> = serde_json::from_slice(body).ok()?;
    match envelope.body {
        DomainEvent::ExportCompleted(event) => Some((
            event.user_id,
            Notification {
                kind: ExportEventKind::Completed,
                export_id: event.export_id,
            },
        )),
        DomainEvent::ExportFailed(event) => Some((
            event.user_id,
            Notification {
                kind: ExportEventKind::Failed,
                export_id: event.export_id,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use keel_contracts::events::{ExportCompleted, ExportFailed, OrderSnapshot, OrderUpdated};

    use super::*;

    fn wire(event: DomainEvent) -> Vec<u8> {
        serde_json::to_vec(&Envelope::new(event)).unwrap()
    }

    #[test]
    fn export_outcomes_decode_into_their_owners_notifications() {
        let (user, export_id) = (Uuid::new_v4(), Uuid::new_v4());
        let completed = wire(DomainEvent::ExportCompleted(ExportCompleted {
            export_id,
            user_id: user,
            rows_written: 3,
            bytes: 120,
        }));
        assert_eq!(
            notification_of(&completed),
            Some((
                user,
                Notification {
                    kind: ExportEventKind::Completed,
                    export_id
                }
            ))
        );
        let failed = wire(DomainEvent::ExportFailed(ExportFailed {
            export_id,
            user_id: user,
            error: "the filter matched too many rows".into(),
        }));
        assert_eq!(
            notification_of(&failed).map(|(_, n)| n.kind),
            Some(ExportEventKind::Failed)
        );
    }

    #[test]
    fn other_events_and_garbage_are_ignored() {
        let order = wire(DomainEvent::OrderCreated(OrderSnapshot {
            order_id: Uuid::new_v4(),
            user_id: Some(Uuid::new_v4()),
            status: "pending".into(),
            currency: "EUR".into(),
            total_cents: 100,
            source: "api".into(),
        }));
        assert_eq!(notification_of(&order), None);
        assert_eq!(notification_of(b"{not json"), None);
        assert_eq!(notification_of(br#"{"type":"export.completed"}"#), None);
    }

    #[test]
    fn order_events_decode_into_the_changed_order_and_nothing_else_does() {
        let snapshot = |order_id| OrderSnapshot {
            order_id,
            user_id: None,
            status: "paid".into(),
            currency: "EUR".into(),
            total_cents: 100,
            source: "webhook:shopify".into(),
        };
        let (created, updated) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            changed_order_of(&wire(DomainEvent::OrderCreated(snapshot(created)))),
            Some(created)
        );
        assert_eq!(
            changed_order_of(&wire(DomainEvent::OrderUpdated(OrderUpdated {
                order: snapshot(updated),
                previous_status: "pending".into(),
            }))),
            Some(updated)
        );
        let export = wire(DomainEvent::ExportFailed(ExportFailed {
            export_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            error: "no".into(),
        }));
        assert_eq!(changed_order_of(&export), None);
        assert_eq!(changed_order_of(b"{not json"), None);
    }
}
