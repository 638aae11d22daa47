//! The events area's answers before a stream starts, as problems. Once the
//! `200 text/event-stream` head is out, failures end the stream instead
//! (the client resumes).

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use keel_http::{FieldError, Problem};

use crate::events::event_id::MalformedEventId;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// `field` is `Last-Event-ID` (the header) or `last_event_id` (the query).
    #[error("{field} {source}")]
    MalformedLastEventId {
        field: &'static str,
        source: MalformedEventId,
    },
    #[error("too many open event streams")]
    TooManyStreams { retry_after_secs: u64 },
    #[error("the export store is unavailable: {0}")]
    Unavailable(#[source] keel_commerce::exports::Error),
    /// The store answered "not now" (a statement or lock timeout, an
    /// overloaded server): 503, like `Unavailable`.
    #[error("the export store is busy: {0}")]
    Busy(#[source] keel_commerce::exports::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl EventsError {
    fn problem(&self) -> Problem {
        match self {
            EventsError::MalformedLastEventId { field, source } => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-last-event-id",
                "Invalid Last-Event-ID",
            )
            .with_detail("Resume with an id this stream sent, or without one.")
            .with_errors(vec![FieldError::new(*field, source.to_string())]),
            EventsError::TooManyStreams { .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                "Too Many Event Streams",
            )
            .with_detail("Close another event stream of this account first."),
            EventsError::Unavailable(_) => {
                Problem::unavailable("The export store is unreachable; retry shortly.")
            }
            EventsError::Busy(_) => Problem::unavailable(
                "The export store did not answer in time or is overloaded; retry shortly.",
            ),
            EventsError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl From<keel_commerce::exports::Error> for EventsError {
    fn from(error: keel_commerce::exports::Error) -> Self {
        if error.is_unavailable() {
            EventsError::Unavailable(error)
        } else if crate::exports::error::is_transient(&error) {
            EventsError::Busy(error)
        } else {
            EventsError::Unexpected(error.into())
        }
    }
}

impl ResponseError for EventsError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            EventsError::Unexpected(e) => {
                tracing::error!(error = ?e, "opening an event stream failed unexpectedly");
            }
            EventsError::Unavailable(e) => {
                tracing::warn!(error = %e, "export store unavailable");
            }
            EventsError::Busy(e) => tracing::warn!(error = %e, "export store busy"),
            _ => {}
        }
        let problem = self.problem();
        let mut response = problem.response_builder();
        match self {
            EventsError::TooManyStreams { retry_after_secs } => {
                response.insert_header((RETRY_AFTER, retry_after_secs.to_string()));
            }
            EventsError::Unavailable(_) | EventsError::Busy(_) => {
                response.insert_header((RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(&problem)
    }
}
