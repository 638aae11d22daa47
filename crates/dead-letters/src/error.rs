//! The crate's error type.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing `dead_letters` failed.
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    /// Enqueueing the requeued job failed.
    #[error("writing the requeued job to the outbox failed: {0}")]
    Outbox(#[from] keel_outbox::Error),
    /// No dead letter has this id.
    #[error("dead letter {0} not found")]
    NotFound(Uuid),
    /// It was requeued already; requeueing again would run the job twice.
    #[error("dead letter {0} was already requeued")]
    AlreadyRequeued(Uuid),
    /// The stored body is neither a job nor a domain event envelope
    /// (undecodable bytes): there is nothing to send back.
    #[error("dead letter {id} is not a job nor an event and cannot be requeued: {reason}")]
    NotAJob { id: Uuid, reason: String },
    /// A stored row holds a value the code does not know.
    #[error("a stored dead letter is unreadable: {0}")]
    Corrupt(String),
}

impl Error {
    /// True when the database could not be reached (callers answer 503, the
    /// archiver waits and tries again).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => {
                e.is_unavailable()
            }
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Error::Database(error.into())
    }
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
