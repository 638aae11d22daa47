//! Domain events: facts that already happened, published on the `events`
//! topic exchange with the event type as routing key.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::MessageBody;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum DomainEvent {
    #[serde(rename = "user.registered")]
    UserRegistered(UserRegistered),
    #[serde(rename = "user.logged_in")]
    UserLoggedIn(UserLoggedIn),
    #[serde(rename = "order.created")]
    OrderCreated(OrderSnapshot),
    #[serde(rename = "order.updated")]
    OrderUpdated(OrderUpdated),
    #[serde(rename = "webhook.received")]
    WebhookReceived(WebhookReceived),
    #[serde(rename = "export.completed")]
    ExportCompleted(ExportCompleted),
    #[serde(rename = "export.failed")]
    ExportFailed(ExportFailed),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserLoggedIn {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

/// The order as it is after the change: enough for analytics to roll up
/// revenue without calling back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderSnapshot {
    pub order_id: Uuid,
    /// Owner; `None` for orders that arrived by webhook without a Keel user.
    pub user_id: Option<Uuid>,
    pub status: String,
    pub currency: String,
    pub total_cents: i64,
    /// `api` or `webhook:<source>`.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderUpdated {
    #[serde(flatten)]
    pub order: OrderSnapshot,
    pub previous_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookReceived {
    pub event_id: Uuid,
    pub source: String,
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExportCompleted {
    pub export_id: Uuid,
    pub user_id: Uuid,
    pub rows_written: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExportFailed {
    pub export_id: Uuid,
    pub user_id: Uuid,
    /// Written for the user: never a stack trace or SQL text.
    pub error: String,
}

impl MessageBody for DomainEvent {
    fn message_type(&self) -> &'static str {
        match self {
            DomainEvent::UserRegistered(_) => "user.registered",
            DomainEvent::UserLoggedIn(_) => "user.logged_in",
            DomainEvent::OrderCreated(_) => "order.created",
            DomainEvent::OrderUpdated(_) => "order.updated",
            DomainEvent::WebhookReceived(_) => "webhook.received",
            DomainEvent::ExportCompleted(_) => "export.completed",
            DomainEvent::ExportFailed(_) => "export.failed",
        }
    }

    fn version(&self) -> u16 {
        1
    }
}
