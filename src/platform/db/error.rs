//! Database failures, classified by what the caller can do about them — knowing nothing of
//! HTTP: the edge maps each to a problem ([`crate::platform::error`]).

/// A failed database call, by what it means for the caller.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the pool's wait (`DB_POOL_TIMEOUT_MS`) ran out or the
    /// server is unreachable. Retry shortly.
    #[error("no database connection available: {0}")]
    Unavailable(String),
    /// The connection broke mid-statement: closed, or the server shutting down or not yet
    /// accepting connections (SQLSTATE 57P01/57P03). A read may be retried elsewhere.
    #[error("database connection lost")]
    ConnectionLost,
    /// A read on a hot standby cancelled by WAL replay (SQLSTATE 40001 there, PostgreSQL
    /// docs §27.4.2 "Handling Query Conflicts"). Retry elsewhere.
    #[error("the read conflicted with replication")]
    RecoveryConflict,
    /// The statement ran past `statement_timeout` (SQLSTATE 57014).
    #[error("the database took too long")]
    Timeout,
    /// Chosen as the victim of a deadlock (SQLSTATE 40P01). Retry.
    #[error("the transaction was chosen to break a deadlock")]
    Deadlock,
    /// A write reached a server in recovery (SQLSTATE 25006): the primary was demoted.
    #[error("database unavailable for writes")]
    ReadOnly,
    /// Text the server encoding cannot hold, such as NUL (SQLSTATE 22021).
    #[error("text must not contain NUL characters")]
    BadText,
    /// Another data exception (SQLSTATE class 22: out of range, bad cast; PostgreSQL docs,
    /// Appendix A) from a value the caller supplied.
    #[error("a value is out of the range the database accepts ({0})")]
    BadValue(String),
    /// A consistency token for a WAL position the primary has not reached.
    #[error("the consistency token is ahead of the primary's WAL")]
    TokenAhead,
    /// Anything else: a bug or an unexpected server state.
    #[error("database query failed: {0}")]
    Query(#[source] tokio_postgres::Error),
}

impl DbError {
    /// Whether running the same read on another server may succeed.
    pub fn retry_elsewhere(&self) -> bool {
        matches!(self, Self::RecoveryConflict | Self::ConnectionLost)
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "database connection unavailable");
        Self::Unavailable(e.to_string())
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io {
            tracing::warn!(error = %e, "database connection failed");
            return Self::ConnectionLost;
        }
        let Some(code) = e.code() else {
            return Self::Query(e);
        };
        if *code == SqlState::T_R_SERIALIZATION_FAILURE {
            Self::RecoveryConflict
        } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
            Self::BadText
        } else if code.code().starts_with("22") {
            // Logged loudly: the edge's own checks should have caught it first.
            tracing::warn!(sqlstate = code.code(), error = %e, "data exception reached the database");
            Self::BadValue(code.code().to_owned())
        } else if *code == SqlState::QUERY_CANCELED {
            Self::Timeout
        } else if *code == SqlState::T_R_DEADLOCK_DETECTED {
            tracing::warn!(error = %e, "deadlock");
            Self::Deadlock
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW {
            tracing::warn!(error = %e, "database server shutting down or starting");
            Self::ConnectionLost
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            Self::ReadOnly
        } else {
            Self::Query(e)
        }
    }
}

/// The name of the constraint a unique violation (SQLSTATE 23505) hit, if that is what `e` is.
pub fn unique_violation(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
        db.constraint()
    } else {
        None
    }
}
