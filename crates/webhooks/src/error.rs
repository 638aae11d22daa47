//! The crate's error type (storage only: a refused delivery is a
//! [`Rejection`](crate::Rejection), not an error).

use std::time::Duration;

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
    /// The batch holding this capture failed for a passing reason (a
    /// statement or lock timeout, an overloaded server, a commit past its
    /// deadline): every delivery in it gets this (the first one gets the
    /// original error). Nothing of the batch was answered as stored; a
    /// retry may find it stored (see [`Error::DeadlineExceeded`]).
    #[error("the capture batch failed for a passing reason: {0}")]
    Busy(String),
    /// The batch holding this capture failed for a reason a retry will not
    /// cure (every delivery but the first gets this).
    #[error("the capture batch failed: {0}")]
    BatchFailed(String),
    /// More captures are already waiting for a commit than
    /// `group_commit.max_waiting`: refused at once, nothing queued.
    #[error("{0} captures are already waiting to be committed")]
    Saturated(usize),
    /// The commit holding this capture did not finish within the capture
    /// deadline. The caller stops waiting; the delivery may still be
    /// committed afterwards (the sender's retry then answers duplicate).
    #[error("the capture was not committed within {0:?}")]
    DeadlineExceeded(Duration),
    /// The committer handling this capture failed (panicked) before
    /// answering; it was replaced. The delivery may or may not be stored.
    #[error("the committer handling this capture failed before answering")]
    CommitterFailed,
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

    /// True when the capture failed for a passing reason other than an
    /// unreachable database: saturation, a deadline, a statement or lock
    /// timeout, an overloaded server, a lost serialization race — the
    /// database's side is [`keel_db::Error::is_transient`] — or a lost
    /// committer. Callers answer 503 with `Retry-After`; the sender's retry
    /// is safe (capture is idempotent by delivery id).
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Busy(_)
            | Error::Saturated(_)
            | Error::DeadlineExceeded(_)
            | Error::CommitterFailed => true,
            Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => e.is_transient(),
            _ => false,
        }
    }

    /// A 503 rather than a 500: [`is_unavailable`](Self::is_unavailable) or
    /// [`is_busy`](Self::is_busy).
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || self.is_busy()
    }

    /// True when the failure belongs to one delivery's data rather than to
    /// the statement or the server: a data exception (class 22, e.g. a NUL
    /// in a text value) or an integrity violation (class 23). Only these
    /// ([`keel_db::Error::is_bad_input`]) are worth retrying one delivery
    /// at a time to find the culprit; a timeout or an overload would only
    /// be repeated once per delivery.
    pub fn is_isolatable(&self) -> bool {
        match self {
            Error::Vanished => true,
            Error::Database(e) | Error::Outbox(keel_outbox::Error::Database(e)) => e.is_bad_input(),
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
