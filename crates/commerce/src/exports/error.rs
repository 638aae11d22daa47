//! The exports domain's error type.

use crate::exports::domain::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such export, or not one the caller may see (indistinguishable on
    /// purpose).
    #[error("export not found")]
    NotFound,
    /// The user already has `limit` exports queued or running.
    #[error("at most {limit} exports may be queued or running at once")]
    TooManyActive { limit: u32 },
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// The caller's lease (attempt `generation`) is no longer the export's:
    /// another builder took it over, or the export finished meanwhile.
    #[error("the lease of attempt {generation} on this export was lost")]
    LeaseLost { generation: i32 },
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error("writing the export's message failed: {0}")]
    Outbox(#[from] keel_outbox::Error),
    #[error("a stored export is unreadable: {0}")]
    Corrupt(String),
}

impl Error {
    /// True when the database could not be reached (callers answer 503, the
    /// worker retries).
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
        Error::Database(error.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
