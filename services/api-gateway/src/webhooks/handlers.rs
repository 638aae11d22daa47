//! `POST /webhooks/{source}`: raw body → verify → capture → 200.
//!
//! The body is read within `webhooks.body_read_timeout` (a sender trickling
//! it is cut with 408) and `body_limit` (413): a connection holds at most
//! the bytes that actually arrived, never more than the limit, for at most
//! the deadline.

use actix_web::http::header::{CONTENT_LENGTH, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures::StreamExt;
use keel_webhooks::headers::stored_headers;
use keel_webhooks::{Captured, Headers, NewEvent, PreparedCapture, Verified};
use serde::Serialize;
use uuid::Uuid;

use crate::webhooks::error::WebhookError;
use crate::webhooks::{Source, Webhooks};

/// The delivery was stored (or had been, for a redelivery).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookReceipt)]
pub struct Receipt {
    /// The stored event (the first one, for a redelivery).
    pub id: Uuid,
    /// True when this delivery id was stored before: nothing new was stored.
    pub duplicate: bool,
}

/// actix's header map as the verifier's [`Headers`].
struct RequestHeaders<'a>(&'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|value| value.as_bytes())
    }
}

#[utoipa::path(post, path = "/webhooks/{source}", tag = "webhooks", operation_id = "receive_webhook",
    summary = "Receives a signed delivery. The body is verified byte for byte against
the source's scheme (`shopify`, `github`, `stripe`, `standard`) and
stored with its processing job; the answer never waits for processing.",
    description = "Deliveries are rate limited per sender address (generously), before the
body is read, and the body must arrive within the read deadline (10 s by
default).",
    params(
        ("source" = String, Path, example = "shopify", description = "A configured source, e.g. `shopify`."),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "The raw body the sender signed (any bytes; JSON for every supported scheme)."),
    responses(
        (status = 200, description = "Stored, or a redelivery of a stored delivery", body = Receipt),
        (status = 400, description = "Stale or future timestamp, missing delivery id, unreadable body", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Missing or bad signature", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "Unknown source", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 408, description = "The body did not arrive within the read deadline", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 413, description = "Body over the source's limit", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "This sender address is over its budget; see Retry-After", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The webhook store is unreachable, or cannot take the delivery in time (capture queue full, commit past its deadline); retry after Retry-After (a delivery stored meanwhile answers duplicate)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
#[tracing::instrument(skip_all, fields(source = %path.as_str()))]
pub async fn receive(
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    webhooks: web::Data<Webhooks>,
) -> Result<HttpResponse, WebhookError> {
    let Some(source) = webhooks.sources.get(path.as_str()) else {
        // Not labelled with the requested name: anyone can invent those.
        webhooks.metrics.count("unknown", "unknown_source");
        return Err(WebhookError::UnknownSource);
    };
    let outcome = ingest(source, &webhooks, &req, payload).await;
    let label = match &outcome {
        Ok(Captured::Stored(_)) => "stored",
        Ok(Captured::Duplicate(_)) => "duplicate",
        Err(error) => error.outcome(),
    };
    webhooks.metrics.count(&source.name, label);
    let captured = outcome?;
    Ok(HttpResponse::Ok().json(Receipt {
        id: captured.event_id(),
        duplicate: captured.is_duplicate(),
    }))
}

async fn ingest(
    source: &Source,
    webhooks: &Webhooks,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Captured, WebhookError> {
    let body = tokio::time::timeout(
        webhooks.body_read_timeout,
        read_body(req, payload, source.body_limit),
    )
    .await
    .map_err(|_| WebhookError::BodyTimeout(webhooks.body_read_timeout))??;
    let now = chrono::Utc::now().timestamp();
    let Verified { delivery_id, topic } =
        source
            .verifier
            .verify(&RequestHeaders(req.headers()), &body, now)?;
    let headers = stored_headers(
        source.scheme(),
        req.headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );

    // Durable before the answer: the group commit answers after the commit
    // that holds this delivery.
    let prepared = PreparedCapture::new(&NewEvent {
        source: &source.name,
        topic: topic.as_deref(),
        delivery_id: &delivery_id,
        body: &body,
        headers: &headers,
    })?;
    let captured = webhooks.captures.capture(prepared).await?;
    match captured {
        Captured::Stored(_) => webhooks.waker.wake(),
        Captured::Duplicate(id) => {
            tracing::info!(event_id = %id, delivery_id, "webhook redelivered; already stored");
        }
    }
    Ok(captured)
}

/// Most a body buffer starts with; it grows with the bytes that arrive.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// The body exactly as sent, refused as soon as it exceeds `limit`: up front
/// when `Content-Length` says so, else while streaming.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, WebhookError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(WebhookError::TooLarge { limit });
    }
    // Sized by what was declared only up to a point: a Content-Length is a
    // promise, and a sender that never keeps it must not cost the limit.
    let mut body = BytesMut::with_capacity(
        declared
            .unwrap_or(8 * 1024)
            .min(limit)
            .min(INITIAL_CAPACITY),
    );
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| WebhookError::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
