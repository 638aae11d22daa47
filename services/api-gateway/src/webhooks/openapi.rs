//! The webhooks area's part of the OpenAPI document: the ingest endpoint
//! third parties post to. The function is never called: it carries the
//! path annotation.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::openapi::schemas::Problem;

const PROBLEM: &str = "application/problem+json";

/// The delivery was stored (or had been, for a redelivery).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// The stored event (the first one, for a redelivery).
    pub id: uuid::Uuid,
    /// True when this delivery id was stored before: nothing new was stored.
    pub duplicate: bool,
}

/// Receives a signed delivery. The body is verified byte for byte against
/// the source's scheme (`shopify`, `github`, `stripe`, `standard`) and
/// stored with its processing job; the answer never waits for processing.
///
/// Deliveries are rate limited per sender address (generously), before the
/// body is read, and the body must arrive within the read deadline (10 s by
/// default).
#[utoipa::path(post, path = "/webhooks/{source}", tag = "webhooks", operation_id = "receive_webhook",
    params(
        ("source" = String, Path, example = "shopify", description = "A configured source, e.g. `shopify`."),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "The raw body the sender signed (any bytes; JSON for every supported scheme)."),
    responses(
        (status = 200, description = "Stored, or a redelivery of a stored delivery", body = WebhookReceipt),
        (status = 400, description = "Stale or future timestamp, missing delivery id, unreadable body", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Missing or bad signature", body = Problem, content_type = PROBLEM),
        (status = 404, description = "Unknown source", body = Problem, content_type = PROBLEM),
        (status = 408, description = "The body did not arrive within the read deadline", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body over the source's limit", body = Problem, content_type = PROBLEM),
        (status = 429, description = "This sender address is over its budget; see Retry-After", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The webhook store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn receive_webhook() {}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(receive_webhook),
    tags((name = "webhooks", description = "Inbound webhooks, authenticated by the sender's signature (no bearer token)."))
)]
pub struct WebhooksApi;
