//! The exports area's API errors: one variant per answer, each with a
//! stable problem `type`; store and storage failures mapped in one place
//! (unreachable or "not now", `keel_db::Retryability`: 503 with
//! `Retry-After`).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use keel_commerce::exports::ExportStatus;
use keel_commerce::orders::domain::Invalid;
use keel_http::{FieldError, Problem};

use crate::exports::signing::LinkRefused;

#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    #[error("export not found")]
    NotFound,
    #[error("invalid input")]
    Validation(Vec<Invalid>),
    /// Already a problem (the JSON parser's 400/422).
    #[error("{0}")]
    Body(Box<Problem>),
    #[error("too many active exports (limit {limit})")]
    TooManyActive { limit: u32, retry_after: Duration },
    #[error("the export is {0}, not succeeded")]
    NotReady(ExportStatus),
    #[error("the export has expired")]
    Expired,
    #[error(transparent)]
    Link(#[from] LinkRefused),
    #[error("no credentials and no signed link")]
    Unauthenticated,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    /// The database answered "not now": a statement or lock timeout, an
    /// overloaded server, a lost serialization race
    /// (`keel_db::Retryability::Transient`). 503, like `Unavailable`.
    #[error("the export store is busy: {0}")]
    Busy(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ExportsError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![Invalid::new(field, message)])
    }

    fn problem(&self) -> Problem {
        match self {
            ExportsError::NotFound => {
                Problem::new(StatusCode::NOT_FOUND, "export-not-found", "Export Not Found")
                    .with_detail("No export with this id exists, or it is not yours.")
            }
            ExportsError::Validation(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            )
            .with_errors(
                errors
                    .iter()
                    .map(|e| FieldError::new(&e.field, &e.message))
                    .collect(),
            ),
            ExportsError::Body(problem) => (**problem).clone(),
            ExportsError::TooManyActive { limit, .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-active-exports",
                "Too Many Active Exports",
            )
            .with_detail(format!(
                "At most {limit} exports may be queued or running at once; retry when one has finished."
            )),
            ExportsError::NotReady(status) => Problem::new(
                StatusCode::CONFLICT,
                "export-not-ready",
                "Export Not Ready",
            )
            .with_detail(format!(
                "The export is {status}; its file can be downloaded once it has succeeded."
            )),
            ExportsError::Expired => Problem::new(StatusCode::GONE, "export-expired", "Export Expired")
                .with_detail("The export's file has been removed; request a new export."),
            ExportsError::Link(refused) => Problem::new(
                StatusCode::FORBIDDEN,
                "invalid-download-link",
                "Invalid Download Link",
            )
            .with_detail(match refused {
                LinkRefused::Expired => {
                    "The download link has expired; get a fresh one from GET /api/v1/exports/{id}."
                }
                LinkRefused::Invalid => "The download link is not valid.",
            }),
            ExportsError::Unauthenticated => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized")
                    .with_detail("A valid Bearer access token or a signed download link is required.")
            }
            ExportsError::Unavailable(_) => {
                Problem::unavailable("The export store is unreachable; retry shortly.")
            }
            ExportsError::Busy(_) => Problem::unavailable(
                "The export store did not answer in time or is overloaded; retry shortly.",
            ),
            ExportsError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl From<keel_commerce::exports::Error> for ExportsError {
    fn from(error: keel_commerce::exports::Error) -> Self {
        use keel_commerce::exports::Error;
        match error {
            Error::NotFound => ExportsError::NotFound,
            e if e.is_unavailable() => ExportsError::Unavailable(e.to_string()),
            e if is_transient(&e) => ExportsError::Busy(e.to_string()),
            e => ExportsError::Unexpected(e.into()),
        }
    }
}

/// The export store answered "not now" (`keel_db::Error::is_transient`).
/// Shared with the events area, which reads the same store.
pub(crate) fn is_transient(error: &keel_commerce::exports::Error) -> bool {
    use keel_commerce::exports::Error;
    match error {
        Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => e.is_transient(),
        _ => false,
    }
}

impl From<keel_db::Error> for ExportsError {
    fn from(error: keel_db::Error) -> Self {
        keel_commerce::exports::Error::from(error).into()
    }
}

impl From<keel_files::Error> for ExportsError {
    fn from(error: keel_files::Error) -> Self {
        match error {
            // The row says succeeded but the file is gone: retention got
            // there first.
            keel_files::Error::NotFound { .. } => ExportsError::Expired,
            e => ExportsError::Unavailable(e.to_string()),
        }
    }
}

impl ResponseError for ExportsError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ExportsError::Unexpected(e) => {
                tracing::error!(error = ?e, "exports request failed unexpectedly");
            }
            ExportsError::Unavailable(e) => tracing::warn!(error = %e, "export store unavailable"),
            ExportsError::Busy(e) => tracing::warn!(error = %e, "export store busy"),
            _ => {}
        }
        let problem = self.problem();
        let mut response = problem.response_builder();
        match self {
            ExportsError::Unavailable(_) | ExportsError::Busy(_) => {
                response.insert_header((RETRY_AFTER, "1"));
            }
            ExportsError::TooManyActive { retry_after, .. } => {
                response.insert_header((RETRY_AFTER, retry_after.as_secs().max(1).to_string()));
            }
            ExportsError::Unauthenticated => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer realm=\"keel\""));
            }
            _ => {}
        }
        response.json(&problem)
    }
}
