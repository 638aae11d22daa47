//! The orders area's API errors: one variant per answer, each with a stable
//! problem `type`, and every database failure mapped in [`From<keel_commerce::orders::Error>`].

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, ResponseError};
use keel_commerce::orders::domain::{ForbiddenTransition, IllegalTransition, Invalid};
use keel_http::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("order not found")]
    NotFound,
    #[error("invalid input")]
    Validation(Vec<Invalid>),
    /// Already a problem (the JSON extractor's 400/413/422).
    #[error("{0}")]
    Body(Box<Problem>),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// A customer asked for a status only an admin or a webhook may set.
    #[error(transparent)]
    ForbiddenTransition(#[from] ForbiddenTransition),
    #[error("external_id already used")]
    DuplicateExternalId,
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] keel_commerce::orders::Error),
    /// The group commit could not take or commit the order in time (queue
    /// full, deadline passed, its batch failed retryably): 503, retry.
    #[error("the order store is busy: {0}")]
    Busy(#[source] crate::orders::group_commit::CommitError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl OrdersError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![Invalid::new(field, message)])
    }

    fn problem(&self) -> Problem {
        match self {
            OrdersError::NotFound => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order Not Found")
                    .with_detail("No order with this id exists, or it is not yours.")
            }
            OrdersError::Validation(errors) => Problem::new(
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
            OrdersError::Body(problem) => (**problem).clone(),
            OrdersError::IllegalTransition(t) => Problem::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "Illegal Status Transition",
            )
            .with_detail(t.to_string()),
            // The same type and title as every other 403 (`require_admin`);
            // the detail says what a customer may do.
            OrdersError::ForbiddenTransition(t) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .with_detail(t.to_string())
            }
            OrdersError::DuplicateExternalId => Problem::new(
                StatusCode::CONFLICT,
                "duplicate-external-id",
                "Duplicate External Id",
            )
            .with_errors(vec![FieldError::new(
                "external_id",
                "an order with this external_id already exists",
            )]),
            OrdersError::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key Reused",
            )
            .with_detail("This Idempotency-Key was used with a different request; use a new key.")
            .with_errors(vec![FieldError::new(
                "Idempotency-Key",
                "was already used with a different request",
            )]),
            OrdersError::Unavailable(_) => {
                Problem::unavailable("The order store is unreachable; retry shortly.")
            }
            OrdersError::Busy(_) => Problem::unavailable(
                "The order store cannot take this order in time; retry shortly.",
            ),
            OrdersError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl From<crate::orders::group_commit::CommitError> for OrdersError {
    fn from(error: crate::orders::group_commit::CommitError) -> Self {
        use crate::orders::group_commit::CommitError;
        match error {
            CommitError::Order(e) => e.into(),
            CommitError::Batch {
                retryable: false,
                message,
            } => OrdersError::Unexpected(anyhow::anyhow!(message)),
            e => OrdersError::Busy(e),
        }
    }
}

impl From<keel_commerce::orders::Error> for OrdersError {
    fn from(error: keel_commerce::orders::Error) -> Self {
        match error {
            keel_commerce::orders::Error::NotFound => OrdersError::NotFound,
            keel_commerce::orders::Error::IllegalTransition(t) => OrdersError::IllegalTransition(t),
            keel_commerce::orders::Error::ForbiddenTransition(t) => {
                OrdersError::ForbiddenTransition(t)
            }
            keel_commerce::orders::Error::DuplicateExternalId => OrdersError::DuplicateExternalId,
            // "Not now" (`keel_db::Retryability`): an unreachable database
            // (a pool checkout past `database.acquire_timeout` included), a
            // statement or lock timeout, class 53, a lost serialization
            // race. A 503 with `Retry-After`, not a 500: the client's retry
            // (with its `Idempotency-Key`) may well succeed.
            e if e.is_unavailable() || e.is_transient() => OrdersError::Unavailable(e),
            e => OrdersError::Unexpected(e.into()),
        }
    }
}

impl From<keel_db::Error> for OrdersError {
    fn from(error: keel_db::Error) -> Self {
        keel_commerce::orders::Error::from(error).into()
    }
}

impl ResponseError for OrdersError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            OrdersError::Unexpected(e) => {
                tracing::error!(error = ?e, "orders request failed unexpectedly");
            }
            OrdersError::Unavailable(e) => {
                tracing::warn!(error = %e, "order store unavailable");
            }
            OrdersError::Busy(e) => {
                tracing::warn!(error = %e, "order store busy");
            }
            _ => {}
        }
        let problem = self.problem();
        let mut response = problem.response_builder();
        if matches!(self, OrdersError::Unavailable(_) | OrdersError::Busy(_)) {
            response.insert_header((RETRY_AFTER, "1"));
        }
        response.json(&problem)
    }
}
