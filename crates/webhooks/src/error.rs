//! The crate's error type (storage only: a refused delivery is a
//! [`Rejection`](crate::Rejection), not an error).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error("writing the outbox rows failed: {0}")]
    Outbox(#[from] keel_outbox::Error),
    /// The insert met a conflicting row that is gone by the time it is read
    /// (deleted concurrently); the sender's retry will be stored.
    #[error("the conflicting webhook event disappeared")]
    Vanished,
    /// The database could not be reached for a batch of captures; every
    /// delivery in it gets this (the first one gets the original error).
    #[error("no database connection for the capture batch: {0}")]
    Unavailable(String),
    /// The group-commit tasks are gone (shutting down).
    #[error("the capture queue has stopped")]
    Stopped,
}

impl Error {
    /// True when the database could not be reached (callers answer 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => {
                e.is_unavailable()
            }
            Error::Unavailable(_) | Error::Stopped => true,
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Error::Database(error.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
