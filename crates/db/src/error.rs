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

/// What a failure says about trying again: the one place that reads
/// SQLSTATEs for it, so every caller (webhook group commit, the gateway's
/// error maps, the worker) draws the same line between "not now" and
/// "never" (ADR 0022, ADR 0023).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryability {
    /// The database could not be reached: no pooled connection in time,
    /// the connection closed or failed without an answer, SQLSTATE class
    /// 08 (connection exception) or 57P0x (the server is shutting down or
    /// not accepting connections yet). Retry later; HTTP 503.
    Unavailable,
    /// The server answered "not now": the statement ran past
    /// `statement_timeout` (57014), a lock was not granted within
    /// `lock_timeout` (55P03), the server is short of resources (class 53:
    /// connections, memory, disk), or the transaction lost a serialization
    /// race (40001) or a deadlock (40P01). The same request may well
    /// succeed later; HTTP 503 with `Retry-After`.
    Transient,
    /// The input itself is bad: a data exception (class 22, e.g. a NUL in
    /// a text value, a number out of range) or an integrity violation
    /// (class 23: unique, foreign key, check). Retrying the same input
    /// fails the same way; a batch failing so can be split to find the
    /// culprit.
    BadInput,
    /// Anything else (a bug, a schema that does not match the code, a
    /// failed migration): retrying will not help; HTTP 500.
    Permanent,
}

impl Retryability {
    /// The class of a SQLSTATE the server answered with.
    pub fn of_code(code: &SqlState) -> Self {
        let code = code.code();
        let class = code.get(..2).unwrap_or_default();
        if class == "08" || code.starts_with("57P0") {
            Retryability::Unavailable
        } else if matches!(code, "57014" | "55P03" | "40001" | "40P01") || class == "53" {
            Retryability::Transient
        } else if matches!(class, "22" | "23") {
            Retryability::BadInput
        } else {
            Retryability::Permanent
        }
    }

    /// Worth retrying later: [`Unavailable`](Self::Unavailable) or
    /// [`Transient`](Self::Transient).
    pub fn is_retryable_later(self) -> bool {
        matches!(self, Retryability::Unavailable | Retryability::Transient)
    }
}

impl Error {
    /// How this failure classifies (see [`Retryability`]).
    pub fn retryability(&self) -> Retryability {
        match self {
            Error::Pool(_) => Retryability::Unavailable,
            // Closed, or failed without the server's answer (I/O error,
            // protocol error): the connection, not the statement.
            Error::Query(e) if e.is_closed() => Retryability::Unavailable,
            Error::Query(e) => e
                .code()
                .map_or(Retryability::Unavailable, Retryability::of_code),
            Error::InvalidUrl(_) | Error::Build(_) | Error::Migration { .. } => {
                Retryability::Permanent
            }
        }
    }

    /// True when the failure is about reaching the database rather than the
    /// statement itself: callers answer 503 and retry instead of 500.
    pub fn is_unavailable(&self) -> bool {
        self.retryability() == Retryability::Unavailable
    }

    /// True when the server answered "not now" (a statement or lock
    /// timeout, class 53, a lost serialization race or deadlock): callers
    /// answer 503 with `Retry-After`, as for [`is_unavailable`](Self::is_unavailable).
    pub fn is_transient(&self) -> bool {
        self.retryability() == Retryability::Transient
    }

    /// True when the statement failed on its data (SQLSTATE classes 22 and
    /// 23): the same input will fail again.
    pub fn is_bad_input(&self) -> bool {
        self.retryability() == Retryability::BadInput
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

    /// Serialization failures and deadlocks: the transaction can be retried
    /// as is, at once (a subset of [`is_transient`](Self::is_transient)).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(code: &str) -> Retryability {
        Retryability::of_code(&SqlState::from_code(code))
    }

    #[test]
    fn unreachable_and_shutting_down_servers_are_unavailable() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03",
        ] {
            assert_eq!(of(code), Retryability::Unavailable, "{code}");
        }
    }

    #[test]
    fn timeouts_overload_and_lost_races_are_transient() {
        for code in [
            "57014", "55P03", "53000", "53100", "53200", "53300", "53400", "40001", "40P01",
        ] {
            assert_eq!(of(code), Retryability::Transient, "{code}");
            assert!(of(code).is_retryable_later(), "{code}");
        }
    }

    #[test]
    fn data_exceptions_and_integrity_violations_are_bad_input() {
        for code in [
            "22000", "22021", "22P02", "22003", "23505", "23503", "23514", "23502",
        ] {
            assert_eq!(of(code), Retryability::BadInput, "{code}");
            assert!(!of(code).is_retryable_later(), "{code}");
        }
    }

    #[test]
    fn everything_else_is_permanent() {
        // undefined table and column, syntax error, insufficient privilege,
        // other object-state errors (55 but not 55P03), other operator
        // interventions (57 but not 57014 / 57P0x), transaction rollback
        // other than the two races.
        for code in [
            "42P01", "42703", "42601", "42501", "55006", "57000", "40002", "XX000",
        ] {
            assert_eq!(of(code), Retryability::Permanent, "{code}");
        }
    }

    #[test]
    fn a_pool_error_is_unavailable() {
        let error = Error::Pool(deadpool_postgres::PoolError::Closed);
        assert_eq!(error.retryability(), Retryability::Unavailable);
        assert!(error.is_unavailable());
        assert!(!error.is_transient());
        assert!(!error.is_bad_input());
    }
}
