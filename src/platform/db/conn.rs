//! Labelled connections and traced queries: a [`Conn`] (and its [`Tx`]) carries the [`Route`]
//! it was chosen for, and every query through [`Traced`] gets a client span and a duration
//! sample labelled with it.

use deadpool_postgres::{GenericClient, Object, Pool};

use super::DbError;

/// Which pool a connection came from and why it was chosen: the `db.pool` and
/// `db.route_reason` of its queries' spans and the `pool` label of their metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `primary`, `replica`, or `replica-or-primary` (a retry).
    pub pool: &'static str,
    /// `write`, `default`, `token-not-replayed`, `replica-unhealthy`, `conflict-retry`,
    /// `background`.
    pub reason: &'static str,
}

impl Route {
    /// A primary connection for a request's writes (and reads that must be fresh).
    pub const WRITE: Self = Self {
        pool: "primary",
        reason: "write",
    };
    /// A primary connection of a service with no replicas (auth).
    pub const PRIMARY: Self = Self {
        pool: "primary",
        reason: "default",
    };
    /// A primary connection of a background task (presence, sweeps, socket delivery).
    pub const BACKGROUND: Self = Self {
        pool: "primary",
        reason: "background",
    };
}

/// A pooled connection that carries its [`Route`], so every query on it (and on its
/// transactions) is labelled with where it runs, whichever task runs it. Dereferences to the
/// pooled client for everything else.
pub struct Conn {
    client: Object,
    route: Route,
}

impl Conn {
    /// A connection from `pool`, labelled `route`.
    ///
    /// Errors: [`DbError::Unavailable`] when none comes within the pool's wait.
    pub async fn get(pool: &Pool, route: Route) -> Result<Self, DbError> {
        Ok(Self::new(pool.get().await?, route))
    }

    /// Labels an already pooled connection.
    pub fn new(client: Object, route: Route) -> Self {
        Self { client, route }
    }

    /// Where this connection runs, and why.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Starts a transaction that keeps the connection's route.
    ///
    /// Errors: `BEGIN` fails.
    pub async fn transaction(&mut self) -> Result<Tx<'_>, DbError> {
        let route = self.route;
        Ok(Tx {
            tx: self.client.transaction().await?,
            route,
        })
    }

    /// Starts a read-only `REPEATABLE READ` transaction: every statement in it sees the same
    /// snapshot (PostgreSQL docs §13.2.2), with the connection's route.
    ///
    /// Errors: `BEGIN` fails.
    pub async fn snapshot(&mut self) -> Result<Tx<'_>, DbError> {
        let route = self.route;
        let tx = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        Ok(Tx { tx, route })
    }
}

impl std::ops::Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.client
    }
}

/// A transaction on a [`Conn`], with its route.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    route: Route,
}

impl<'a> Tx<'a> {
    /// Commits.
    ///
    /// Errors: `COMMIT` fails (the transaction is then rolled back).
    pub async fn commit(self) -> Result<(), DbError> {
        Ok(self.tx.commit().await?)
    }
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = deadpool_postgres::Transaction<'a>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

/// Queries with a client span each (OpenTelemetry database semantic conventions):
/// `db.system=postgresql`, `db.operation` (the statement's first keyword), `db.statement`
/// (the SQL text; values travel as bind parameters and never appear), and `db.pool` /
/// `db.route_reason` from the connection's [`Route`]. Each query's duration goes to
/// `db_query_duration_seconds{pool, operation}`. Use these instead of the plain methods.
///
/// Statements are prepared once per connection and cached by their text (deadpool's
/// `prepare_cached`), so a query is one round trip (Bind/Execute) instead of two
/// (Parse/Describe, then Bind/Execute). SQL texts must therefore be drawn from a bounded
/// set: values always go in as parameters, never formatted into the text.
#[allow(async_fn_in_trait)]
pub trait Traced {
    /// The client the queries run on.
    type Client: GenericClient;

    /// The client.
    fn client(&self) -> &Self::Client;

    /// Where the client runs.
    fn route(&self) -> Route;

    /// [`deadpool_postgres::GenericClient::query`], traced.
    async fn query_t(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let c = self.client();
        traced(self.route(), sql, async {
            let statement = c.prepare_cached(sql).await?;
            c.query(&statement, params).await
        })
        .await
    }

    /// [`deadpool_postgres::GenericClient::query_one`], traced.
    async fn query_one_t(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
        let c = self.client();
        traced(self.route(), sql, async {
            let statement = c.prepare_cached(sql).await?;
            c.query_one(&statement, params).await
        })
        .await
    }

    /// [`deadpool_postgres::GenericClient::query_opt`], traced.
    async fn query_opt_t(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
        let c = self.client();
        traced(self.route(), sql, async {
            let statement = c.prepare_cached(sql).await?;
            c.query_opt(&statement, params).await
        })
        .await
    }

    /// [`deadpool_postgres::GenericClient::execute`], traced.
    async fn execute_t(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let c = self.client();
        traced(self.route(), sql, async {
            let statement = c.prepare_cached(sql).await?;
            c.execute(&statement, params).await
        })
        .await
    }
}

impl Traced for Conn {
    type Client = Object;
    fn client(&self) -> &Object {
        &self.client
    }
    fn route(&self) -> Route {
        self.route
    }
}

impl<'a> Traced for Tx<'a> {
    type Client = deadpool_postgres::Transaction<'a>;
    fn client(&self) -> &Self::Client {
        &self.tx
    }
    fn route(&self) -> Route {
        self.route
    }
}

async fn traced<T>(
    route: Route,
    sql: &str,
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    use tracing::Instrument;
    let operation = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let Route { pool, reason } = route;
    // Field values are evaluated only when the span is enabled: a query pays for the
    // statement text only when something records it.
    let span = tracing::info_span!(
        "db.query",
        otel.name = %format!("{operation} {pool}"),
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = %operation,
        db.statement = %statement_text(sql),
        db.pool = pool,
        db.route_reason = reason,
        otel.status_code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = query.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(m) = crate::platform::metrics::metrics() {
        m.db_query_duration
            .with_label_values(&[pool, &operation])
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

/// The SQL text for `db.statement`: whitespace runs folded to one space, at most 1000
/// characters.
fn statement_text(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(1000));
    for word in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() >= 1000 {
            break;
        }
    }
    out.chars().take(1000).collect()
}

/// The pool of a service with only a primary (auth): its connections carry [`Route::PRIMARY`].
#[derive(Clone)]
pub struct Primary(Pool);

impl Primary {
    /// Wraps `pool`.
    pub fn new(pool: Pool) -> Self {
        Self(pool)
    }

    /// A connection.
    ///
    /// Errors: [`DbError::Unavailable`] when none comes within the pool's wait.
    pub async fn get(&self) -> Result<Conn, DbError> {
        Conn::get(&self.0, Route::PRIMARY).await
    }

    /// The pool itself (status for metrics, readiness).
    pub fn pool(&self) -> &Pool {
        &self.0
    }
}
