//! The crate's error type.

use crate::domain::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such order, or not one the caller may see (indistinguishable on
    /// purpose).
    #[error("order not found")]
    NotFound,
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// `(source, external_id)` is already taken.
    #[error("an order with this external_id already exists")]
    DuplicateExternalId,
    #[error("the cursor is not one this API issued")]
    InvalidCursor,
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
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        let error = keel_db::Error::from(error);
        // The one constraint a caller can trip with valid input.
        if error.is_unique_violation() && error.constraint() == Some("orders_source_external_id") {
            Error::DuplicateExternalId
        } else {
            Error::Database(error)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
