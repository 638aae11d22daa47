//! `GET /api/v1/events`: parse the resume position at the edge, take a
//! place in the hub, replay, then stream.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::events::Events;
use crate::events::error::EventsError;
use crate::events::event_id::EventId;
use crate::events::stream::EventStream;
use crate::identity::Caller;

/// The header `EventSource` sends when it reconnects.
pub const LAST_EVENT_ID: &str = "Last-Event-ID";
/// The same, as a query parameter, for clients that cannot set headers.
pub const LAST_EVENT_ID_PARAM: &str = "last_event_id";

pub const EVENT_STREAM: &str = "text/event-stream";

/// Where the client resumes from: the header, else the query parameter.
/// The header wins because a reconnecting `EventSource` keeps its original
/// URL (and any `last_event_id` in it) but sends its latest id as the
/// header. Empty values mean "from now", as when neither is given.
pub fn resume_position(req: &HttpRequest) -> Result<Option<EventId>, EventsError> {
    if let Some(value) = req.headers().get(LAST_EVENT_ID) {
        return parse_non_empty(value.to_str().ok(), LAST_EVENT_ID);
    }
    let from_query = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == LAST_EVENT_ID_PARAM)
        .map(|(_, value)| value.into_owned());
    match from_query {
        Some(value) => parse_non_empty(Some(&value), LAST_EVENT_ID_PARAM),
        None => Ok(None),
    }
}

/// `raw` is `None` when the header is not visible ASCII.
fn parse_non_empty(raw: Option<&str>, field: &'static str) -> Result<Option<EventId>, EventsError> {
    match raw.map(str::trim) {
        Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|source| EventsError::MalformedLastEventId { field, source }),
        None => Err(EventsError::MalformedLastEventId {
            field,
            source: crate::events::event_id::MalformedEventId,
        }),
    }
}

/// `GET /events`: the caller's export events as Server-Sent Events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "stream_events",
    summary = "The caller's export outcomes as Server-Sent Events.",
    description = "Each event is `id: <finished_at µs>-<export id>`, `event: export.completed`
or `export.failed`, `data:` the export as `GET /api/v1/exports/{id}`
returns it. A `: ping` comment comes every 15 s between events, and
`retry:` tells `EventSource` when to reconnect. Reconnecting with
`Last-Event-ID` (or `?last_event_id=`) first replays what finished
since that event. The stream does not end on its own.",
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
        (status = 400, description = "Malformed Last-Event-ID (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited, or too many open streams for this account",
            body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The export store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn stream(
    req: HttpRequest,
    caller: Caller,
    events: web::Data<Events>,
) -> Result<HttpResponse, EventsError> {
    let resume_after = resume_position(&req)?;
    // Live first, then the replay: see `stream`'s module documentation.
    let subscription =
        events
            .hub
            .subscribe(caller.user_id)
            .map_err(|_| EventsError::TooManyStreams {
                retry_after_secs: events.options.retry.as_secs().max(1),
            })?;
    let stream = EventStream::open(
        events.pool.clone(),
        subscription,
        resume_after,
        &events.options,
        events.closing.clone(),
        events.metrics.clone(),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM)))
        // Never cached; `no-store` is also what every API response gets.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        // nginx (an ingress) would otherwise buffer the stream.
        .insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")))
        .streaming(stream.into_body()))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const ID: &str = "1700000000000000-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e";
    const OTHER: &str = "1600000000000000-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e";

    fn field_of(error: EventsError) -> &'static str {
        match error {
            EventsError::MalformedLastEventId { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_position_means_from_now() {
        let req = TestRequest::get().uri("/api/v1/events").to_http_request();
        assert_eq!(resume_position(&req).unwrap(), None);
        let req = TestRequest::get()
            .uri("/api/v1/events?last_event_id=")
            .insert_header((LAST_EVENT_ID, ""))
            .to_http_request();
        assert_eq!(resume_position(&req).unwrap(), None);
    }

    #[test]
    fn the_header_wins_over_the_query_parameter() {
        let req = TestRequest::get()
            .uri(&format!("/api/v1/events?last_event_id={OTHER}"))
            .insert_header((LAST_EVENT_ID, ID))
            .to_http_request();
        assert_eq!(resume_position(&req).unwrap(), Some(ID.parse().unwrap()));
        let req = TestRequest::get()
            .uri(&format!("/api/v1/events?last_event_id={OTHER}"))
            .to_http_request();
        assert_eq!(resume_position(&req).unwrap(), Some(OTHER.parse().unwrap()));
    }

    #[test]
    fn a_malformed_position_names_where_it_came_from() {
        let req = TestRequest::get()
            .uri("/api/v1/events")
            .insert_header((LAST_EVENT_ID, "42"))
            .to_http_request();
        assert_eq!(
            field_of(resume_position(&req).unwrap_err()),
            "Last-Event-ID"
        );
        let req = TestRequest::get()
            .uri("/api/v1/events?last_event_id=nope")
            .to_http_request();
        assert_eq!(
            field_of(resume_position(&req).unwrap_err()),
            "last_event_id"
        );
    }
}
