//! The orders domain's error type.

use super::domain::{ForbiddenTransition, IllegalTransition, Payment, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such order, or not one the caller may see (indistinguishable on
    /// purpose).
    #[error("order not found")]
    NotFound,
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// A customer asked for a change only an admin or a webhook may make.
    #[error(transparent)]
    ForbiddenTransition(#[from] ForbiddenTransition),
    /// A confirmed payment that is not the order's amount or currency: the
    /// order is not marked paid.
    #[error(
        "amount {paid} {paid_currency} does not match the order's total {total} {currency}",
        paid = .paid.amount_cents,
        paid_currency = .paid.currency.as_str()
    )]
    PaymentMismatch {
        paid: Payment,
        total: i64,
        currency: String,
    },
    /// The external_id is already taken: by this customer (API orders), or
    /// in this source (webhook orders).
    #[error("an order with this external_id already exists")]
    DuplicateExternalId,
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error("writing the domain event failed: {0}")]
    Outbox(#[from] keel_outbox::Error),
    #[error("a stored order is unreadable: {0}")]
    Corrupt(String),
}

impl Error {
    /// True when the database could not be reached (callers answer 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => e.is_unavailable(),
            Error::Outbox(keel_outbox::Error::Database(e)) => e.is_unavailable(),
            _ => false,
        }
    }

    /// True when the database answered "not now" (a statement or lock
    /// timeout, class 53, a lost serialization race or deadlock:
    /// [`keel_db::Error::is_transient`]): like an unreachable database, a
    /// 503 with `Retry-After`, since the client's retry (with its
    /// `Idempotency-Key`) may well succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<TransitionError> for Error {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::Illegal(e) => Error::IllegalTransition(e),
            TransitionError::Forbidden(e) => Error::ForbiddenTransition(e),
        }
    }
}

/// The unique indexes on `external_id` (migration 3): the one constraint a
/// caller can trip with valid input.
const EXTERNAL_ID_INDEXES: [&str; 2] = ["orders_api_external_id", "orders_webhook_external_id"];

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        let error = keel_db::Error::from(error);
        if error.is_unique_violation()
            && error
                .constraint()
                .is_some_and(|name| EXTERNAL_ID_INDEXES.contains(&name))
        {
            Error::DuplicateExternalId
        } else {
            Error::Database(error)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
