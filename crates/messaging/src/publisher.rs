//! Publishing with publisher confirms: a publish returns only once the
//! broker has taken responsibility for the message.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keel_contracts::{DomainEvent, Envelope, Job};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::connection::Broker;
use crate::error::{Error, Result};
use crate::topology::Target;
use crate::trace::current_trace_headers;

/// Persistent delivery mode (AMQP `delivery_mode = 2`): written to disk.
const PERSISTENT: u8 = 2;

/// A message ready for the wire, for callers that already hold serialised
/// bytes (the outbox relay).
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The envelope id, sent as `message_id` (consumers de-duplicate on it).
    pub id: Uuid,
    /// The envelope type, sent as the AMQP `type` property.
    pub message_type: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// String headers, at least the trace context (`traceparent`).
    pub headers: BTreeMap<String, String>,
    /// When the message was created.
    pub timestamp: DateTime<Utc>,
    /// Fail the publish when no queue is bound for its routing key (jobs:
    /// a job nobody will run is a bug). Events have no such guarantee: a
    /// topic with no subscriber is normal.
    pub mandatory: bool,
}

impl OutgoingMessage {
    /// Serialises an envelope, with the current span's trace context.
    pub fn from_envelope<T: serde::Serialize + keel_contracts::MessageBody>(
        envelope: &Envelope<T>,
        mandatory: bool,
    ) -> Result<Self> {
        Ok(Self {
            id: envelope.id,
            message_type: envelope.message_type().to_owned(),
            body: serde_json::to_vec(envelope)?,
            headers: current_trace_headers(),
            timestamp: Utc::now(),
            mandatory,
        })
    }

    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (key, value) in &self.headers {
            headers.insert(
                ShortString::from(key.as_str()),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        base_properties(self.id, &self.message_type, self.timestamp).with_headers(headers)
    }
}

/// The properties every Keel message carries.
pub(crate) fn base_properties(
    id: Uuid,
    message_type: &str,
    timestamp: DateTime<Utc>,
) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(ShortString::from(id.to_string()))
        .with_type(ShortString::from(message_type))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(u64::try_from(timestamp.timestamp()).unwrap_or(0))
}

/// Publishes with confirms over one channel of the shared [`Broker`]
/// connection, replacing the channel when it dies.
#[derive(Debug)]
pub struct Publisher {
    broker: Broker,
    channel: Mutex<Option<Channel>>,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            channel: Mutex::new(None),
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes a job to `{ns}.jobs` with its queue's routing key.
    pub async fn publish_job(&self, envelope: &Envelope<Job>) -> Result<()> {
        let message = OutgoingMessage::from_envelope(envelope, true)?;
        let exchange = self.broker.topology().exchange(Target::Jobs);
        self.publish(&exchange, envelope.body.queue().routing_key(), message)
            .await
    }

    /// Publishes an event to `{ns}.events` with its type as routing key.
    pub async fn publish_event(&self, envelope: &Envelope<DomainEvent>) -> Result<()> {
        let message = OutgoingMessage::from_envelope(envelope, false)?;
        let exchange = self.broker.topology().exchange(Target::Events);
        self.publish(&exchange, envelope.message_type(), message)
            .await
    }

    /// Publishes prepared bytes and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        message: OutgoingMessage,
    ) -> Result<()> {
        let properties = message.properties();
        self.publish_raw(
            exchange,
            routing_key,
            &message.body,
            properties,
            message.mandatory,
        )
        .await
    }

    /// Publishes with explicit properties (used for retries and
    /// dead-lettering, which carry extra headers) and waits for the confirm.
    pub(crate) async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let channel = self.channel().await?;
        let timeout = self.broker.settings().publish_timeout;
        let options = BasicPublishOptions {
            mandatory,
            // `immediate` is not supported by RabbitMQ (it closes the
            // connection); never set.
            immediate: false,
        };
        let confirm = async {
            let pending = channel
                .basic_publish(
                    ShortString::from(exchange),
                    ShortString::from(routing_key),
                    options,
                    body,
                    properties,
                )
                .await?;
            Ok::<_, Error>(pending.await?)
        };
        let confirmation = match tokio::time::timeout(timeout, confirm).await {
            Ok(result) => result,
            Err(_) => {
                // The channel may be wedged; start over on a new one.
                self.channel.lock().await.take();
                Err(Error::ConfirmTimeout(timeout))
            }
        }?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(Error::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            }),
            Confirmation::Nack(_) => Err(Error::Nacked {
                exchange: exchange.to_owned(),
            }),
            // Cannot happen: every channel here is in confirm mode. Treat it
            // as a failure rather than assume the broker has the message.
            Confirmation::NotRequested => Err(Error::Nacked {
                exchange: exchange.to_owned(),
            }),
        }
    }

    /// The cached confirm-mode channel, or a new one if it is gone (e.g.
    /// closed by the broker after a publish to a missing exchange).
    async fn channel(&self) -> Result<Channel> {
        let mut guard = self.channel.lock().await;
        if let Some(channel) = guard.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.broker.channel().await?;
        // Wait for confirm-select-ok so the very first publish is confirmed.
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await?;
        *guard = Some(channel.clone());
        Ok(channel)
    }
}
