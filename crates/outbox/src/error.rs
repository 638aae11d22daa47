//! The crate's error type.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the outbox tables failed.
    #[error("outbox database operation failed: {0}")]
    Database(#[from] keel_db::Error),

    /// Publishing to the broker failed (the row stays unpublished).
    #[error("publishing an outbox message failed: {0}")]
    Broker(#[from] keel_messaging::Error),

    /// The envelope could not be serialised.
    #[error("could not serialise the message: {0}")]
    Serialise(#[from] serde_json::Error),

    /// A stored row cannot be turned back into a message.
    #[error("outbox row {id} is invalid: {reason}")]
    InvalidRow { id: Uuid, reason: String },
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Database(error.into())
    }
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
