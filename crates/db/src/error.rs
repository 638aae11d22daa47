use tokio_postgres::error::SqlState;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database URL is invalid: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("could not build the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection within the acquire timeout, or the server is unreachable.
    #[error("no database connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration {component} failed: {source}")]
    Migration {
        component: &'static str,
        #[source]
        source: refinery::Error,
    },
}

impl Error {
    /// True when the failure is about reaching the database rather than the
    /// statement itself: callers answer 503 and retry instead of 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Query(e) => e.is_closed() || e.code().is_none_or(is_connection_class),
            _ => false,
        }
    }

    /// The SQLSTATE, when the server answered with one.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Error::Query(e) => e.code(),
            _ => None,
        }
    }

    /// The violated constraint's name for unique/foreign-key/check violations,
    /// so one place can map constraints to HTTP answers.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Query(e) => e.as_db_error().and_then(|db| db.constraint()),
            _ => None,
        }
    }

    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// Serialization failures and deadlocks: the transaction can be retried as is.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

/// SQLSTATE class 08 (connection exception) and 57P0x (server shutting down).
fn is_connection_class(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") || code.starts_with("57P0")
}
