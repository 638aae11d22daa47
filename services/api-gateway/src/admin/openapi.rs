//! The admin area's part of the OpenAPI document. The schemas mirror the
//! bodies the handlers build (from `keel_webhooks::admin`,
//! `keel_dead_letters` and the management client); the functions are never
//! called: they carry the path annotations.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::openapi::schemas::Problem;

const PROBLEM: &str = "application/problem+json";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEventStatus {
    Received,
    Processed,
    Ignored,
    Failed,
}

/// A captured delivery, without its body and headers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventSummary {
    pub id: uuid::Uuid,
    /// The configured source (`/webhooks/{source}`).
    pub source: String,
    pub topic: Option<String>,
    /// The sender's id of the delivery.
    pub delivery_id: String,
    pub status: WebhookEventStatus,
    /// Processing attempts over the event's life, replays included.
    pub attempts: i32,
    /// The most recent failure; cleared by a successful attempt.
    pub last_error: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BodyEncoding {
    /// `body` is the bytes as text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// `body` is base64 (the bytes were not UTF-8).
    Base64,
}

/// A captured delivery with its stored headers (signatures `[redacted]`,
/// `Authorization` and cookies never stored) and its raw body.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    pub id: uuid::Uuid,
    pub source: String,
    pub topic: Option<String>,
    pub delivery_id: String,
    pub status: WebhookEventStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Header name (lower case) → value.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
    pub body_encoding: BodyEncoding,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventPage {
    pub items: Vec<WebhookEventSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayAccepted {
    pub id: uuid::Uuid,
    /// Always `received`: the event waits for its new job.
    pub status: WebhookEventStatus,
    /// The `webhook.process` message enqueued.
    pub job_id: uuid::Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterStatus {
    Dead,
    Requeued,
}

/// A message no consumer could handle, archived from the dead queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterSummary {
    /// The message's id (its envelope id).
    pub id: uuid::Uuid,
    /// `webhook.process`, `export.run`, an event type; empty when unknown.
    pub message_type: String,
    /// The key it was first published with.
    pub routing_key: String,
    /// `retries-exhausted`, `permanent`, `undecodable`, `broker:<reason>`.
    pub death_reason: String,
    pub last_error: Option<String>,
    /// Handler attempts in its last life.
    pub attempts: i32,
    /// The queue it died in.
    pub queue: Option<String>,
    pub dead_at: chrono::DateTime<chrono::Utc>,
    /// How often it died (a requeued message that dies again counts here).
    pub deaths: i32,
    pub status: DeadLetterStatus,
    pub requeued_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The admin who requeued it.
    pub requeued_by: Option<uuid::Uuid>,
    /// The id of the message the requeue sent.
    pub requeued_as: Option<uuid::Uuid>,
}

/// A dead letter with its AMQP headers (as JSON) and body.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: uuid::Uuid,
    pub message_type: String,
    pub routing_key: String,
    pub death_reason: String,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub queue: Option<String>,
    pub dead_at: chrono::DateTime<chrono::Utc>,
    pub deaths: i32,
    pub status: DeadLetterStatus,
    pub requeued_at: Option<chrono::DateTime<chrono::Utc>>,
    pub requeued_by: Option<uuid::Uuid>,
    pub requeued_as: Option<uuid::Uuid>,
    /// Every header of the dead message (`x-keel-*`, `x-death`, trace context).
    #[schema(value_type = Object)]
    pub headers: serde_json::Value,
    pub body: String,
    pub body_encoding: BodyEncoding,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequeueAccepted {
    pub id: uuid::Uuid,
    /// Always `requeued`.
    pub status: DeadLetterStatus,
    /// The id of the new message carrying the job.
    pub message_id: uuid::Uuid,
}

/// Messages per second, as last sampled by the broker.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueRates {
    pub publish: f64,
    pub deliver: f64,
    pub ack: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    pub name: String,
    /// `quorum`, `classic` or `stream`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Waiting for a consumer.
    #[schema(minimum = 0)]
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    #[schema(minimum = 0)]
    pub unacked: u64,
    #[schema(minimum = 0)]
    pub messages: u64,
    #[schema(minimum = 0)]
    pub consumers: u64,
    pub rates: QueueRates,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// `amqp.namespace`: every listed queue's name starts with it.
    pub namespace: String,
    pub items: Vec<Queue>,
}

/// Captured webhook deliveries, newest first, with attempts and last error.
#[utoipa::path(get, path = "/api/v1/admin/webhook-events", tag = "admin", operation_id = "list_webhook_events",
    security(("bearer" = [])),
    params(
        ("status" = Option<WebhookEventStatus>, Query),
        ("source" = Option<String>, Query, description = "A configured source, e.g. `shopify`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of events", body = WebhookEventPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn list_webhook_events() {}

/// One captured delivery: headers (signatures redacted) and the raw body.
#[utoipa::path(get, path = "/api/v1/admin/webhook-events/{id}", tag = "admin", operation_id = "get_webhook_event",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The event", body = WebhookEvent),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such event", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn get_webhook_event() {}

/// Processes an event again: back to `received`, with a new job, committed together.
#[utoipa::path(post, path = "/api/v1/admin/webhook-events/{id}/replay", tag = "admin", operation_id = "replay_webhook_event",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, description = "Queued for processing", body = ReplayAccepted),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such event", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn replay_webhook_event() {}

/// Messages that exhausted their retries or failed for good, newest first.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "admin", operation_id = "list_dead_letters",
    security(("bearer" = [])),
    params(
        ("status" = Option<DeadLetterStatus>, Query),
        ("message_type" = Option<String>, Query, description = "e.g. `webhook.process`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn list_dead_letters() {}

/// One dead letter with its headers and body.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters/{id}", tag = "admin", operation_id = "get_dead_letter",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such dead letter", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn get_dead_letter() {}

/// Sends a dead job back to its queue (as a new message), once.
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/{id}/requeue", tag = "admin", operation_id = "requeue_dead_letter",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, description = "Requeued", body = RequeueAccepted),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such dead letter", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Already requeued, or not a job", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn requeue_dead_letter() {}

/// Depth, consumers and rates of each queue of the namespace (RabbitMQ's
/// management API; figures trail by its sampling interval, 5 s by default).
#[utoipa::path(get, path = "/api/v1/admin/queues", tag = "admin", operation_id = "list_queues",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The namespace's queues, by name", body = QueueList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The management API is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn list_queues() {}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        list_webhook_events,
        get_webhook_event,
        replay_webhook_event,
        list_dead_letters,
        get_dead_letter,
        requeue_dead_letter,
        list_queues,
    ),
    tags((name = "admin", description = "Operations (role `admin`): webhook events, dead letters, queues."))
)]
pub struct AdminApi;
