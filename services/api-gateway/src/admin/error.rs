//! The admin area's answers as problems: one variant per answer, each with
//! a stable problem `type`; database failures are mapped in one place, by
//! `keel_db::Retryability`: unreachable or "not now" (a statement or lock
//! timeout, overload) is a 503 with `Retry-After`, anything else a 500.

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use keel_db::Retryability;
use keel_http::{FieldError, Problem};

use crate::admin::management::ManagementError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not an admin (the edge refuses first; handlers check again).
    #[error("the admin role is required")]
    Forbidden(Box<Problem>),
    #[error("no webhook event with this id")]
    EventNotFound,
    #[error("no dead letter with this id")]
    DeadLetterNotFound,
    #[error("invalid parameters")]
    Validation(Vec<FieldError>),
    #[error("the dead letter was already requeued")]
    AlreadyRequeued,
    #[error("the dead letter is not a job: {0}")]
    NotAJob(String),
    #[error(transparent)]
    Management(#[from] ManagementError),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    /// The database answered "not now": a statement or lock timeout, an
    /// overloaded server, a lost serialization race
    /// (`keel_db::Retryability::Transient`). 503, like `Unavailable`.
    #[error("the database is busy: {0}")]
    Busy(#[source] anyhow::Error),
    #[error("invalid request body")]
    Body(Box<Problem>),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AdminError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn problem(&self) -> Problem {
        match self {
            AdminError::Forbidden(problem) => (**problem).clone(),
            AdminError::EventNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "webhook-event-not-found",
                "Webhook Event Not Found",
            )
            .with_detail("No webhook event with this id exists."),
            AdminError::DeadLetterNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "dead-letter-not-found",
                "Dead Letter Not Found",
            )
            .with_detail("No dead letter with this id exists."),
            AdminError::Validation(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            )
            .with_errors(errors.clone()),
            AdminError::AlreadyRequeued => Problem::new(
                StatusCode::CONFLICT,
                "dead-letter-already-requeued",
                "Dead Letter Already Requeued",
            )
            .with_detail(
                "This dead letter was requeued already; requeueing it again would run its job twice. \
                 If the job dies again, it returns here as dead.",
            ),
            AdminError::NotAJob(reason) => Problem::new(
                StatusCode::CONFLICT,
                "dead-letter-not-a-job",
                "Dead Letter Is Not A Job",
            )
            .with_detail(format!(
                "Only jobs can be requeued; this message's body is not a job envelope ({reason})."
            )),
            AdminError::Management(error) => {
                let detail = match error {
                    ManagementError::Timeout(_) => "did not answer in time",
                    ManagementError::Unreachable(_) => "is unreachable",
                    ManagementError::Status(_) => "refused the request",
                    ManagementError::Unreadable(_) => "answered something unreadable",
                };
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rabbitmq-management-unavailable",
                    "RabbitMQ Management API Unavailable",
                )
                .with_detail(format!(
                    "The RabbitMQ management API {detail}; queue figures come from it. Retry shortly."
                ))
            }
            AdminError::Unavailable(_) => {
                Problem::unavailable("The database is unreachable; retry shortly.")
            }
            AdminError::Busy(_) => Problem::unavailable(
                "The database did not answer in time or is overloaded; retry shortly.",
            ),
            AdminError::Body(problem) => (**problem).clone(),
            AdminError::Unexpected(_) => Problem::internal(),
        }
    }
}

/// Unreachable or "not now" → 503 with `Retry-After`; anything else → 500
/// (`error` keeps its context for the log).
fn classified(retryability: Retryability, error: anyhow::Error) -> AdminError {
    match retryability {
        Retryability::Unavailable => AdminError::Unavailable(error),
        Retryability::Transient => AdminError::Busy(error),
        Retryability::BadInput | Retryability::Permanent => AdminError::Unexpected(error),
    }
}

/// The classification of a store failure wrapped in another crate's error.
fn of_store(error: Option<&keel_db::Error>) -> Retryability {
    error.map_or(Retryability::Permanent, keel_db::Error::retryability)
}

impl From<keel_db::Error> for AdminError {
    fn from(error: keel_db::Error) -> Self {
        classified(error.retryability(), error.into())
    }
}

impl From<keel_webhooks::Error> for AdminError {
    fn from(error: keel_webhooks::Error) -> Self {
        if error.is_unavailable() {
            AdminError::Unavailable(error.into())
        } else if error.is_busy() {
            AdminError::Busy(error.into())
        } else {
            AdminError::Unexpected(error.into())
        }
    }
}

impl From<keel_dead_letters::Error> for AdminError {
    fn from(error: keel_dead_letters::Error) -> Self {
        use keel_dead_letters::Error;
        match error {
            Error::NotFound(_) => AdminError::DeadLetterNotFound,
            Error::AlreadyRequeued(_) => AdminError::AlreadyRequeued,
            Error::NotAJob { reason, .. } => AdminError::NotAJob(reason),
            e => {
                let store = match &e {
                    Error::Database(db) | Error::Outbox(keel_outbox::Error::Database(db)) => {
                        Some(db)
                    }
                    _ => None,
                };
                classified(of_store(store), e.into())
            }
        }
    }
}

impl From<keel_outbox::Error> for AdminError {
    fn from(error: keel_outbox::Error) -> Self {
        let store = match &error {
            keel_outbox::Error::Database(db) => Some(db),
            _ => None,
        };
        classified(of_store(store), error.into())
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AdminError::Unexpected(e) => {
                tracing::error!(error = ?e, "admin request failed unexpectedly");
            }
            AdminError::Unavailable(e) => tracing::warn!(error = %e, "admin store unavailable"),
            AdminError::Busy(e) => tracing::warn!(error = %e, "admin store busy"),
            AdminError::Management(e) => {
                tracing::warn!(error = %e, "RabbitMQ management API unavailable");
            }
            _ => {}
        }
        let problem = self.problem();
        let mut response = problem.response_builder();
        if matches!(
            self,
            AdminError::Unavailable(_) | AdminError::Busy(_) | AdminError::Management(_)
        ) {
            response.insert_header((RETRY_AFTER, "1"));
        }
        response.json(&problem)
    }
}
