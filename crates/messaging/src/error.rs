//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range; `key` is its dotted path.
    #[error("{key} {reason}")]
    InvalidSettings { key: &'static str, reason: String },

    /// Connecting, opening a channel or an AMQP method failed.
    #[error("AMQP operation failed: {0}")]
    Amqp(#[from] lapin::Error),

    /// No connection could be made within `amqp.connect_timeout`.
    #[error("connecting to the broker timed out after {0:?}")]
    ConnectTimeout(Duration),

    /// The task connecting on the owning runtime ended without an answer
    /// (the runtime is shutting down).
    #[error("the connection attempt was abandoned: {0}")]
    ConnectAbandoned(#[from] tokio::task::JoinError),

    /// The broker refused the message (`basic.nack`).
    #[error("the broker refused the message published to exchange {exchange:?}")]
    Nacked { exchange: String },

    /// A `mandatory` message matched no queue and came back (`basic.return`).
    #[error("message published to exchange {exchange:?} with key {routing_key:?} was unroutable")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },

    /// A pipelined group could not be published (no channel); nothing was
    /// sent. Carries the cause's text, shared by every message of the group.
    #[error("the publish was abandoned: {0}")]
    PublishAbandoned(String),

    /// A message came back without a `message_id` this group sent, so no
    /// ack of the group proves its message was routed.
    #[error("the broker returned a message that cannot be matched to its publish")]
    UnattributedReturn,

    /// No confirm arrived within `amqp.publish_timeout`.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),

    /// The message body could not be serialised.
    #[error("could not serialise the message body")]
    Serialise(#[from] serde_json::Error),

    /// The consumer was cancelled by the broker (e.g. its queue was deleted).
    #[error("the broker cancelled the consumer on queue {0:?}")]
    ConsumerCancelled(String),
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
