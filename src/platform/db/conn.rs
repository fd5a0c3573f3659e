//! Labelled connections and traced queries: a [`Conn`] (and its [`Tx`]) carries the [`Route`]
//! it was chosen for, and every query through [`Traced`] gets a client span and a duration
//! sample labelled with it.

use std::sync::{Arc, OnceLock, RwLock};

use deadpool_postgres::{GenericClient, Object, Pool};

use super::DbError;

/// The database server a pool connects to, for the client spans' `db.namespace`,
/// `server.address` and `server.port` (OpenTelemetry database semantic conventions).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The database name.
    pub namespace: String,
    /// The host name or address (a Unix socket directory for local sockets).
    pub address: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// The first host, port and the database name of `cfg` (PostgreSQL's defaults, 5432 and
    /// the user's name, where the URL gives none).
    pub fn of(cfg: &tokio_postgres::Config) -> Self {
        let address = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        Self {
            namespace: cfg
                .get_dbname()
                .or(cfg.get_user())
                .unwrap_or_default()
                .to_owned(),
            address,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
        }
    }
}

/// Each pool's [`Endpoint`], by the address of the pool's manager (a pool is built a few
/// times per process, at start-up; [`register`] records it).
type Endpoints = RwLock<Vec<(usize, Arc<Endpoint>)>>;

fn endpoints() -> &'static Endpoints {
    static ENDPOINTS: OnceLock<Endpoints> = OnceLock::new();
    ENDPOINTS.get_or_init(RwLock::default)
}

fn key(pool: &Pool) -> usize {
    pool.manager() as *const deadpool_postgres::Manager as usize
}

/// Records where `pool` connects, for its connections' spans.
pub fn register(pool: &Pool, endpoint: Endpoint) {
    if let Ok(mut all) = endpoints().write() {
        all.retain(|(k, _)| *k != key(pool));
        all.push((key(pool), Arc::new(endpoint)));
    }
}

fn endpoint_of(client: &Object) -> Arc<Endpoint> {
    Object::pool(client)
        .and_then(|pool| {
            let k = key(&pool);
            let all = endpoints().read().ok()?;
            all.iter().find(|(p, _)| *p == k).map(|(_, e)| e.clone())
        })
        .unwrap_or_default()
}

/// Which pool a connection came from and why it was chosen: the `switchboard.db.pool` and
/// `switchboard.db.route_reason` of its queries' spans and the `switchboard_db_pool` label of
/// their metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `primary`, `replica`, or `replica-or-primary` (a retry).
    pub pool: &'static str,
    /// `write`, `default`, `token-not-replayed`, `replica-unhealthy`, `replica-busy`,
    /// `conflict-retry`, `background`.
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
    endpoint: Arc<Endpoint>,
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
        let endpoint = endpoint_of(&client);
        Self {
            client,
            route,
            endpoint,
        }
    }

    /// Where this connection runs, and why.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Starts a transaction that keeps the connection's route.
    ///
    /// Errors: `BEGIN` fails.
    pub async fn transaction(&mut self) -> Result<Tx<'_>, DbError> {
        let (route, endpoint) = (self.route, self.endpoint.clone());
        Ok(Tx {
            tx: self.client.transaction().await?,
            route,
            endpoint,
        })
    }

    /// Starts a read-only `REPEATABLE READ` transaction: every statement in it sees the same
    /// snapshot (PostgreSQL docs §13.2.2), with the connection's route.
    ///
    /// Errors: `BEGIN` fails.
    pub async fn snapshot(&mut self) -> Result<Tx<'_>, DbError> {
        let (route, endpoint) = (self.route, self.endpoint.clone());
        let tx = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        Ok(Tx {
            tx,
            route,
            endpoint,
        })
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
    endpoint: Arc<Endpoint>,
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

/// Queries with a client span each, named and attributed by the stable OpenTelemetry database
/// semantic conventions (v1.33+, "Semantic conventions for database client spans" and the
/// PostgreSQL page): `db.system.name=postgresql`, `db.namespace` (the database),
/// `db.operation.name` (the statement's first keyword), `db.query.text` (the SQL text; values
/// travel as bind parameters and never appear), `server.address`/`server.port`, on failure
/// `db.response.status_code` (the SQLSTATE) and `error.type`; the routing facts under the
/// project's namespace: `switchboard.db.pool` / `switchboard.db.route_reason` from the
/// connection's [`Route`]. The span is named `{db.operation.name} {db.namespace}`. Each query's
/// duration goes to `db_client_operation_duration_seconds{db_system_name,
/// db_operation_name, switchboard_db_pool}`. Use these instead of the plain methods.
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

    /// The server the client is connected to.
    fn endpoint(&self) -> &Endpoint;

    /// [`deadpool_postgres::GenericClient::query`], traced.
    async fn query_t(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let c = self.client();
        traced(self.route(), self.endpoint(), sql, async {
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
        traced(self.route(), self.endpoint(), sql, async {
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
        traced(self.route(), self.endpoint(), sql, async {
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
        traced(self.route(), self.endpoint(), sql, async {
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
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

async fn traced<T>(
    route: Route,
    endpoint: &Endpoint,
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
    // A query outside any span (presence heartbeats, sweeps, outbox polls) would be a trace of
    // its own, one span long: those are not traced (only timed), so background loops never
    // fill the backend with orphans. Loops that matter open a span of their own first (the
    // group commit, the fan-out, a socket session).
    if tracing::Span::current().is_none() {
        let started = std::time::Instant::now();
        let result = query.await;
        crate::platform::metrics::observe_db_operation(pool, &operation, started.elapsed(), None);
        return result;
    }
    // Field values are evaluated only when the span is enabled: a query pays for the
    // statement text only when something records it.
    let span = tracing::info_span!(
        "db.query",
        otel.name = %format!("{operation} {}", endpoint.namespace),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.namespace = %endpoint.namespace,
        db.operation.name = %operation,
        db.query.text = %statement_text(sql),
        db.response.status_code = tracing::field::Empty,
        server.address = %endpoint.address,
        server.port = endpoint.port,
        error.type = tracing::field::Empty,
        switchboard.db.pool = pool,
        switchboard.db.route_reason = reason,
    );
    let started = std::time::Instant::now();
    let result = query.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("otel.status_code", "ERROR");
        match e.code() {
            Some(code) => {
                span.record("db.response.status_code", code.code());
                span.record("error.type", code.code());
            }
            None => {
                span.record("error.type", "tokio_postgres::Error");
            }
        }
    }
    // The exemplar names the trace when it is sampled (exported).
    let trace_id = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_sampled().then(|| sc.trace_id().to_string())
    };
    crate::platform::metrics::observe_db_operation(
        pool,
        &operation,
        started.elapsed(),
        trace_id.as_deref(),
    );
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
