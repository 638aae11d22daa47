use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a message body must tell the envelope and the bus about itself.
pub trait MessageBody {
    /// The message's `type`, e.g. `order.created`. Doubles as the routing key
    /// for events.
    fn message_type(&self) -> &'static str;

    /// Schema version of this type's `data`. Bumped only on a breaking
    /// change; additive fields carry `#[serde(default)]` instead.
    fn version(&self) -> u16;
}

/// The envelope every message on the bus travels in.
///
/// `body` is flattened so the wire form is
/// `{"id", "occurred_at", "version", "type", "data"}`: the body enums are
/// adjacently tagged (`type` + `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<T> {
    /// Unique per message; consumers de-duplicate on it.
    pub id: Uuid,
    /// When the fact happened (or the job was requested), UTC.
    pub occurred_at: DateTime<Utc>,
    /// Schema version of `data` for this `type`.
    pub version: u16,
    #[serde(flatten)]
    pub body: T,
}

impl<T: MessageBody> Envelope<T> {
    /// Wraps `body` with a fresh time-ordered id (UUIDv7 keeps outbox and
    /// raw-event indexes append-mostly).
    pub fn new(body: T) -> Self {
        Self::with_id(Uuid::now_v7(), Utc::now(), body)
    }

    pub fn with_id(id: Uuid, occurred_at: DateTime<Utc>, body: T) -> Self {
        let version = body.version();
        Self {
            id,
            occurred_at,
            version,
            body,
        }
    }

    pub fn message_type(&self) -> &'static str {
        self.body.message_type()
    }
}
