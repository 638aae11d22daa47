//! Publishing with publisher confirms: a publish returns only once the
//! broker has taken responsibility for the message.
//!
//! Two ways in: [`Publisher::publish`] sends one message and waits for its
//! confirm (on a channel shared by concurrent callers);
//! [`Publisher::publish_pipelined`] sends a whole group with every confirm
//! in flight at once, over channels each held by one group at a time, and
//! matches returned (unroutable) messages to their publish by `message_id`
//! (ADR 0028).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use keel_contracts::{DomainEvent, Envelope, Job};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{Mutex, MutexGuard};
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

/// Channels a group is split over at most: RabbitMQ runs one process per
/// channel, so the shares are framed, routed and confirmed in parallel
/// (ADR 0028).
pub const CHANNELS_PER_GROUP: usize = 4;

/// Pipeline channels of a publisher by default: room for two groups at
/// once (the relay's `concurrent_batches`) without one waiting for the
/// other's channels.
pub const DEFAULT_PIPELINE_CHANNELS: usize = 2 * CHANNELS_PER_GROUP;

/// The smallest share of a group worth a channel of its own: below it, the
/// extra channel's confirm round trip costs more than it saves.
const MIN_MESSAGES_PER_CHANNEL: usize = 64;

/// A message with where it goes, for [`Publisher::publish_pipelined`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedMessage {
    pub exchange: String,
    pub routing_key: String,
    pub message: OutgoingMessage,
}

/// Publishes with confirms over channels of the shared [`Broker`]
/// connection, replacing a channel when it dies.
#[derive(Debug)]
pub struct Publisher {
    broker: Broker,
    /// Shared by concurrent single publishes.
    channel: Mutex<Option<Channel>>,
    /// Each held by one pipelined group from its first publish to its last
    /// confirm: every `basic.return` on it then belongs to that group, which
    /// is what makes matching returns by message id exact.
    pipeline: Vec<Mutex<Option<Channel>>>,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self::with_pipeline_channels(broker, DEFAULT_PIPELINE_CHANNELS)
    }

    /// A publisher with `channels` pipeline channels (at least one); each
    /// group uses up to [`CHANNELS_PER_GROUP`] of them.
    pub fn with_pipeline_channels(broker: Broker, channels: usize) -> Self {
        Self {
            broker,
            channel: Mutex::new(None),
            pipeline: (0..channels.max(1)).map(|_| Mutex::new(None)).collect(),
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
        self.confirm_channel(&mut guard).await
    }

    /// The channel in `slot` if it is alive, else a new confirm-mode one
    /// stored there.
    async fn confirm_channel(&self, slot: &mut Option<Channel>) -> Result<Channel> {
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.broker.channel().await?;
        // Wait for confirm-select-ok so the very first publish is confirmed.
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes every message with all confirms in flight at once and
    /// returns one result per message, in order. `Ok` means the broker
    /// acked the message and returned nothing carrying its id: it is
    /// routed and stored. A returned message fails with
    /// [`Error::Unroutable`], a nacked one with [`Error::Nacked`] (both the
    /// message's own refusal); anything else (channel lost, no confirm
    /// within `amqp.publish_timeout`) says nothing about the message.
    ///
    /// The group is split over up to [`CHANNELS_PER_GROUP`] free pipeline
    /// channels, each held for its
    /// share from first publish to last confirm, so a `basic.return` seen on
    /// it is one of the share's. lapin hands a return to whichever confirm
    /// it completes next (with a multiple-ack, possibly a neighbour's), so
    /// the confirm it rides on says nothing: returns are matched to
    /// messages by `message_id`, which must be unique within the group.
    pub async fn publish_pipelined(&self, messages: &[RoutedMessage]) -> Vec<Result<()>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let shares = CHANNELS_PER_GROUP
            .min(self.pipeline.len())
            .min(messages.len().div_ceil(MIN_MESSAGES_PER_CHANNEL))
            .max(1);
        let share_len = messages.len().div_ceil(shares);
        let groups: Vec<_> = messages
            .chunks(share_len)
            .enumerate()
            .map(|(index, share)| self.publish_share(index, share))
            .collect();
        futures::future::join_all(groups)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// A free pipeline channel slot, or (all busy) the `index`-th one once
    /// its current group is done.
    async fn pipeline_slot(&self, index: usize) -> MutexGuard<'_, Option<Channel>> {
        for slot in &self.pipeline {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        self.pipeline[index % self.pipeline.len()].lock().await
    }

    async fn publish_share(&self, index: usize, share: &[RoutedMessage]) -> Vec<Result<()>> {
        let mut slot = self.pipeline_slot(index).await;
        let channel = match self.confirm_channel(&mut slot).await {
            Ok(channel) => channel,
            Err(error) => return abandoned(share.len(), &error),
        };
        let timeout = self.broker.settings().publish_timeout;
        match tokio::time::timeout(timeout, publish_and_confirm(&channel, share)).await {
            Ok(results) => results,
            Err(_) => {
                // Some confirms never came: the channel may be wedged, and
                // a late return could not be told apart from the next
                // group's. Start over on a new channel; credit nothing.
                slot.take();
                share
                    .iter()
                    .map(|_| Err(Error::ConfirmTimeout(timeout)))
                    .collect()
            }
        }
    }
}

/// The same failure for every message of a share.
fn abandoned(count: usize, cause: &Error) -> Vec<Result<()>> {
    (0..count)
        .map(|_| Err(Error::PublishAbandoned(cause.to_string())))
        .collect()
}

/// Publishes a share on `channel` (held by the caller alone) and waits for
/// every confirm.
async fn publish_and_confirm(channel: &Channel, share: &[RoutedMessage]) -> Vec<Result<()>> {
    // Every publish is sent before any confirm is awaited: the whole share
    // is in flight at once. The futures register their delivery tags and
    // push their frames in order when first polled.
    let publishes = share.iter().map(|routed| {
        channel.basic_publish(
            ShortString::from(routed.exchange.as_str()),
            ShortString::from(routed.routing_key.as_str()),
            BasicPublishOptions {
                mandatory: routed.message.mandatory,
                immediate: false,
            },
            &routed.message.body,
            routed.message.properties(),
        )
    });
    let sent = futures::future::join_all(publishes).await;
    let confirms = sent.into_iter().map(|sent| async move {
        match sent {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        }
    });
    let confirmations = futures::future::join_all(confirms).await;

    // Every return on this channel since the share's first publish rode on
    // one of the share's confirms (a return precedes its message's ack),
    // whichever one lapin picked: collect them all, by message id.
    let mut returned: HashSet<Uuid> = HashSet::new();
    let mut unattributed = false;
    for confirmation in &confirmations {
        if let Ok(Confirmation::Ack(Some(message)) | Confirmation::Nack(Some(message))) =
            confirmation
        {
            match message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            {
                Some(id) => {
                    returned.insert(id);
                }
                None => unattributed = true,
            }
        }
    }
    share
        .iter()
        .zip(confirmations)
        .map(|(routed, confirmation)| {
            let returned_here = returned.contains(&routed.message.id);
            match confirmation {
                Err(error) => Err(Error::Amqp(error)),
                Ok(Confirmation::Ack(_)) if returned_here => Err(Error::Unroutable {
                    exchange: routed.exchange.clone(),
                    routing_key: routed.routing_key.clone(),
                }),
                // A return nobody can be blamed for: no ack in the share
                // proves its message routed. Retried, never parked.
                Ok(Confirmation::Ack(_)) if unattributed => Err(Error::UnattributedReturn),
                Ok(Confirmation::Ack(_)) => Ok(()),
                Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => Err(Error::Nacked {
                    exchange: routed.exchange.clone(),
                }),
            }
        })
        .collect()
}
