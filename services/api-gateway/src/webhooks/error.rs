//! The webhooks area's answers as problems: one variant per answer, each
//! with a stable problem `type`. A rejection's type and detail name the
//! check that failed (the same slug labels the metric).

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use keel_http::Problem;
use keel_webhooks::Rejection;

/// `Retry-After` of a 503: long enough for a full queue to drain (it holds
/// well under a second of captures) or a blip to pass; senders apply their
/// own backoff on top.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook source is configured under this name")]
    UnknownSource,
    #[error("the body exceeds the source's limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Reading the body failed (the client went away, bad chunking).
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// The body was still arriving when the read deadline passed.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the webhook store is unavailable: {0}")]
    Unavailable(#[source] keel_webhooks::Error),
    /// Stored too slowly to answer: the capture queue is full, the commit
    /// did not finish within its deadline, a statement or lock timed out,
    /// or its committer failed. 503 with `Retry-After`; the sender's retry
    /// is safe (capture is idempotent by delivery id) and may find the
    /// delivery stored after all (ADR 0023).
    #[error("the webhook store is busy: {0}")]
    Busy(#[source] keel_webhooks::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl WebhookError {
    /// The `outcome` label of `webhooks_received`.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::UnknownSource => "unknown_source",
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::Body(_) => "unreadable_body",
            WebhookError::BodyTimeout(_) => "body_timeout",
            WebhookError::Rejected(rejection) => rejection.reason(),
            WebhookError::Unavailable(_) => "unavailable",
            WebhookError::Busy(keel_webhooks::Error::Saturated(_)) => "saturated",
            WebhookError::Busy(keel_webhooks::Error::DeadlineExceeded(_)) => "deadline_exceeded",
            WebhookError::Busy(_) => "busy",
            WebhookError::Unexpected(_) => "error",
        }
    }

    fn problem(&self) -> Problem {
        match self {
            WebhookError::UnknownSource => Problem::new(
                StatusCode::NOT_FOUND,
                "webhook-unknown-source",
                "Unknown Webhook Source",
            )
            .with_detail("No webhook source is configured under this name."),
            WebhookError::TooLarge { limit } => Problem::payload_too_large().with_detail(format!(
                "This source accepts bodies of at most {limit} bytes."
            )),
            WebhookError::Body(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook-unreadable-body",
                "Unreadable Body",
            )
            .with_detail("The request body could not be read."),
            WebhookError::BodyTimeout(deadline) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "webhook-body-timeout",
                "Request Timeout",
            )
            .with_detail(format!(
                "The request body did not arrive within {} s.",
                deadline.as_secs_f64()
            )),
            WebhookError::Rejected(rejection) => {
                let (status, title) = if rejection.is_authentication_failure() {
                    (StatusCode::UNAUTHORIZED, "Webhook Signature Not Verified")
                } else {
                    (StatusCode::BAD_REQUEST, "Webhook Refused")
                };
                // `webhook-bad-signature`, `webhook-stale-timestamp`, ...
                let slug = format!("webhook-{}", rejection.reason().replace('_', "-"));
                Problem::new(status, &slug, title).with_detail(capitalised(&rejection.to_string()))
            }
            WebhookError::Unavailable(_) => {
                Problem::unavailable("The webhook store is unreachable; retry shortly.")
            }
            WebhookError::Busy(_) => Problem::unavailable(
                "The webhook store cannot take this delivery in time; retry shortly \
                 (a retry of a delivery stored meanwhile answers duplicate).",
            ),
            WebhookError::Unexpected(_) => Problem::internal(),
        }
    }
}

fn capitalised(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

impl From<keel_webhooks::Error> for WebhookError {
    fn from(error: keel_webhooks::Error) -> Self {
        if error.is_unavailable() {
            WebhookError::Unavailable(error)
        } else if error.is_busy() {
            WebhookError::Busy(error)
        } else {
            WebhookError::Unexpected(error.into())
        }
    }
}

impl From<keel_db::Error> for WebhookError {
    fn from(error: keel_db::Error) -> Self {
        keel_webhooks::Error::from(error).into()
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            WebhookError::Unexpected(e) => {
                tracing::error!(error = ?e, "webhook ingest failed unexpectedly");
            }
            WebhookError::Unavailable(e) => {
                tracing::warn!(error = %e, "webhook store unavailable");
            }
            WebhookError::Busy(e) => {
                tracing::warn!(error = %e, "webhook store busy; delivery refused with 503");
            }
            _ => {}
        }
        let problem = self.problem();
        let mut response = problem.response_builder();
        if matches!(self, WebhookError::Unavailable(_) | WebhookError::Busy(_)) {
            response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
        }
        if matches!(self, WebhookError::BodyTimeout(_)) {
            // The rest of the body may still be on its way: the connection
            // cannot carry another request (RFC 9110 §15.5.9).
            response.force_close();
        }
        response.json(&problem)
    }
}
