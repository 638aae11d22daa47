//! The events area's part of the OpenAPI document. The function is never
//! called: it carries the path annotation.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use utoipa::OpenApi;

use crate::openapi::schemas::Problem;

const PROBLEM: &str = "application/problem+json";

/// The caller's export outcomes as Server-Sent Events.
///
/// Each event is `id: <finished_at µs>-<export id>`, `event: export.completed`
/// or `export.failed`, `data:` the export as `GET /api/v1/exports/{id}`
/// returns it. A `: ping` comment comes every 15 s between events, and
/// `retry:` tells `EventSource` when to reconnect. Reconnecting with
/// `Last-Event-ID` (or `?last_event_id=`) first replays what finished
/// since that event. The stream does not end on its own.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "stream_events",
    security(("bearer" = [])),
    params(
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: resume after it."),
        ("last_event_id" = Option<String>, Query,
            description = "The same, for clients that cannot set headers; the header wins."),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`", body = String,
            content_type = "text/event-stream"),
        (status = 400, description = "Malformed Last-Event-ID (named)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited, or too many open streams for this account",
            body = Problem, content_type = PROBLEM),
        (status = 503, description = "The export store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn stream_events() {}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(stream_events),
    tags((name = "events", description = "Live notifications (Server-Sent Events)."))
)]
pub struct EventsApi;
