//! Read/write routing across a primary and replicas (DESIGN.md §5).
//!
//! Routing is explicit: a handler asks for [`Routing::primary`] to write (or to read what must
//! be fresh) and [`Routing::reading`] for everything else. Replicas are checked continuously
//! ([`Routing::spawn_monitor`]): reachable, in recovery, and lag in bytes (the primary's
//! `pg_current_wal_lsn()` minus the replica's `pg_last_wal_replay_lsn()`) and in seconds
//! (how long ago the primary wrote the oldest WAL the replica has not replayed, from the
//! primary positions the monitor samples — unlike `now() - pg_last_xact_replay_timestamp()`,
//! this does not count an idle primary as lag). Reads go round-robin to the healthy ones;
//! with none, to the primary.
//!
//! Read-your-writes: a read carrying the caller's consistency token (the primary's WAL LSN
//! after their last write, signed so it cannot be forged) uses a replica only once that
//! replica — judged on the very connection that serves the read — has replayed it, waiting
//! at most `RYW_WAIT_MS` in all — the wait for a free replica connection included;
//! otherwise the primary. A connection that already reported
//! a position at or past the token is not asked again (`routing/replayed.rs`). A read
//! cancelled on a replica by a recovery conflict (PostgreSQL docs §27.4.2, "Handling Query
//! Conflicts") is tried once more elsewhere.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use deadpool_postgres::{Object, Pool, PoolError, TimeoutType};

use super::{Conn, DbError, Route};
use serde::Serialize;
use tokio_postgres::types::PgLsn;

mod monitor;
mod replayed;

use replayed::ReplayedByConnection;

use super::Lsn;

/// Which pool served a read, and why (recorded on the request span as `switchboard.db.pool`
/// and `switchboard.db.route_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadRoute {
    /// A healthy replica, with no token or one it had replayed.
    Replica,
    /// The primary: no replica had replayed the caller's token in time.
    PrimaryTokenNotReplayed,
    /// The primary: no replica healthy.
    PrimaryReplicaUnhealthy,
    /// The primary: the replicas are healthy but none had a free connection in time (within
    /// the read's `RYW_WAIT_MS` for a read with a token, `DB_POOL_TIMEOUT_MS` without).
    PrimaryReplicaBusy,
    /// Another server after a recovery conflict cancelled the read.
    ConflictRetry,
}

impl ReadRoute {
    /// The connection's [`Route`] labels.
    pub fn route(self) -> Route {
        let (pool, reason) = match self {
            Self::Replica => ("replica", "default"),
            Self::PrimaryTokenNotReplayed => ("primary", "token-not-replayed"),
            Self::PrimaryReplicaUnhealthy => ("primary", "replica-unhealthy"),
            Self::PrimaryReplicaBusy => ("primary", "replica-busy"),
            Self::ConflictRetry => ("replica-or-primary", "conflict-retry"),
        };
        Route { pool, reason }
    }
}

/// What the monitor last saw of a replica.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Health {
    pub reachable: bool,
    pub in_recovery: bool,
    /// Bytes of WAL the replica has yet to replay (unknown while the primary is down).
    pub lag_bytes: Option<u64>,
    /// Seconds of replay delay.
    pub lag_seconds: Option<f64>,
    /// The replica's replay position.
    #[serde(skip)]
    pub replay: Option<Lsn>,
    /// Used for reads.
    pub healthy: bool,
}

/// One replica: its pool and last health.
pub struct Replica {
    pub name: String,
    pub pool: Pool,
    /// The health monitor's own connection ([`ServerPools::monitor`]).
    monitor: Pool,
    health: RwLock<Health>,
    /// What each of its connections last reported replaying.
    replayed: ReplayedByConnection,
}

impl Replica {
    /// The last health seen.
    pub fn health(&self) -> Health {
        self.health.read().map(|h| *h).unwrap_or_default()
    }

    fn set(&self, h: Health) {
        if let Ok(mut g) = self.health.write() {
            *g = h;
        }
    }
}

/// Lag thresholds and timing of the replica monitor.
#[derive(Clone, Debug)]
pub struct ReplicaPolicy {
    pub max_lag_bytes: u64,
    pub max_lag: Duration,
    pub check_interval: Duration,
    /// Longest total wait for a replica to replay a consistency token.
    pub ryw_wait: Duration,
}

/// One database server's pools.
pub struct ServerPools {
    /// The requests' and background tasks' connections (`DB_POOL_SIZE`).
    pub requests: Pool,
    /// The health monitor's one connection ([`crate::platform::db::monitor_pool`]): a
    /// request pool exhausted by a storm is not a server that is down.
    pub monitor: Pool,
}

/// The primary, the replicas, and the rules between them.
pub struct Routing {
    primary: Pool,
    /// The health monitor's own primary connection.
    primary_monitor: Pool,
    replicas: Vec<Arc<Replica>>,
    policy: ReplicaPolicy,
    next: AtomicUsize,
    primary_up: AtomicBool,
    /// The primary's WAL position at each check, oldest first (bounded).
    samples: std::sync::Mutex<std::collections::VecDeque<(Lsn, Instant)>>,
}

type Check<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + 'c>>;

/// An error a read may fail with that says whether running it elsewhere may succeed
/// ([`Routing::reading`] retries once on another server then).
pub trait RetryElsewhere: From<DbError> {
    /// See [`DbError::retry_elsewhere`].
    fn retry_elsewhere(&self) -> bool;
}

impl RetryElsewhere for DbError {
    fn retry_elsewhere(&self) -> bool {
        DbError::retry_elsewhere(self)
    }
}

impl Routing {
    /// `replicas` are `(name, pools)`.
    pub fn new(
        primary: ServerPools,
        replicas: Vec<(String, ServerPools)>,
        policy: ReplicaPolicy,
    ) -> Arc<Self> {
        Arc::new(Self {
            primary: primary.requests,
            primary_monitor: primary.monitor,
            replicas: replicas
                .into_iter()
                .map(|(name, pools)| {
                    Arc::new(Replica {
                        name,
                        pool: pools.requests,
                        monitor: pools.monitor,
                        replayed: ReplayedByConnection::default(),
                        // Optimistic until the first check, a second away.
                        health: RwLock::new(Health {
                            reachable: true,
                            in_recovery: true,
                            healthy: true,
                            ..Health::default()
                        }),
                    })
                })
                .collect(),
            policy,
            next: AtomicUsize::new(0),
            primary_up: AtomicBool::new(true),
            samples: Default::default(),
        })
    }

    /// A primary connection: for writes and reads that must be fresh.
    ///
    /// Errors: 503 with `Retry-After` when no connection can be had (primary down or pool
    /// exhausted within `DB_POOL_TIMEOUT_MS`).
    pub async fn primary(&self) -> Result<Conn, DbError> {
        let conn = Conn::get(&self.primary, Route::WRITE).await?;
        tracing::Span::current().record("switchboard.db.pool", "primary");
        Ok(conn)
    }

    /// A primary connection for a background task (labelled `background`).
    ///
    /// Errors: as [`Self::primary`].
    pub async fn background(&self) -> Result<Conn, DbError> {
        Conn::get(&self.primary, Route::BACKGROUND).await
    }

    /// The primary pool itself (for background tasks).
    pub fn primary_pool(&self) -> &Pool {
        &self.primary
    }

    /// The replicas and their last health.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// Whether the primary answers a trivial query within [`super::PING_TIMEOUT`], asked on
    /// the monitor's own connection (readiness): a request pool a storm has exhausted is not
    /// a primary that is down, and must not take the instance out of its Service.
    pub async fn ping_primary(&self) -> bool {
        super::ping(&self.primary_monitor).await
    }

    /// Healthy replicas, starting from the next in round-robin order.
    fn candidates(&self) -> Vec<Arc<Replica>> {
        let healthy: Vec<Arc<Replica>> = self
            .replicas
            .iter()
            .filter(|r| r.health().healthy)
            .cloned()
            .collect();
        if healthy.is_empty() {
            return healthy;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
        healthy[start..]
            .iter()
            .chain(healthy[..start].iter())
            .cloned()
            .collect()
    }

    /// A connection for a read that must reflect every write up to `token`, and how it was
    /// chosen. Prefer [`Self::reading`], which also survives recovery conflicts.
    ///
    /// Errors: 503 when neither a replica nor the primary gives a connection.
    pub async fn read(&self, token: Option<Lsn>) -> Result<(Conn, ReadRoute), DbError> {
        let (conn, route, _) = self.pick(token).await?;
        Ok((conn, route))
    }

    /// [`Self::read`], also naming the replica chosen (None for the primary).
    async fn pick(
        &self,
        token: Option<Lsn>,
    ) -> Result<(Conn, ReadRoute, Option<Arc<Replica>>), DbError> {
        let deadline = tokio::time::Instant::now() + self.policy.ryw_wait;
        let candidates = self.candidates();
        let mut route = if candidates.is_empty() {
            ReadRoute::PrimaryReplicaUnhealthy
        } else {
            ReadRoute::PrimaryTokenNotReplayed
        };
        for replica in &candidates {
            // A read with a token waits for a replica connection only within its RYW wait:
            // past it the primary answers at once, not after the pool's own wait
            // (`DB_POOL_TIMEOUT_MS`, longer), and the replay check below then finds the
            // deadline passed anyway. Replicas held by slow reads or by other token reads
            // waiting out a lagging replay would otherwise hold this read too.
            let got = match token {
                Some(_) => tokio::time::timeout_at(deadline, replica.pool.get())
                    .await
                    .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait))),
                None => replica.pool.get().await,
            };
            let conn = match got {
                Ok(c) => c,
                // Every connection in use: the replica is busy, not down. At debug: under a
                // read storm this is every read. A read that finds every replica busy is
                // counted by `switchboard_db_read_routing_total` (reason `replica-busy`); one
                // served by another replica instead counts as that replica's read.
                Err(PoolError::Timeout(TimeoutType::Wait)) => {
                    tracing::debug!(replica = %replica.name, "no free replica connection in time");
                    route = ReadRoute::PrimaryReplicaBusy;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(replica = %replica.name, error = %e, "replica unavailable");
                    route = ReadRoute::PrimaryReplicaUnhealthy;
                    continue;
                }
            };
            match token {
                None => return Ok(self.on_replica(conn, replica)),
                Some(t) => match replayed(&conn, &replica.replayed, t, deadline).await {
                    Ok(true) => return Ok(self.on_replica(conn, replica)),
                    Ok(false) => route = ReadRoute::PrimaryTokenNotReplayed,
                    Err(e) => {
                        tracing::warn!(replica = %replica.name, error = %e, "replay check failed");
                    }
                },
            }
        }
        let conn = self.primary.get().await?;
        if let (Some(t), ReadRoute::PrimaryTokenNotReplayed | ReadRoute::PrimaryReplicaBusy) =
            (token, route)
        {
            self.check_not_ahead(&conn, t).await?;
        }
        let (conn, route) = self.chosen(conn, route);
        Ok((conn, route, None))
    }

    fn on_replica(
        &self,
        conn: Object,
        replica: &Arc<Replica>,
    ) -> (Conn, ReadRoute, Option<Arc<Replica>>) {
        let (conn, route) = self.chosen(conn, ReadRoute::Replica);
        (conn, route, Some(replica.clone()))
    }

    /// Labels `conn` with `route`: on the request's span, in the routing metric, and on the
    /// connection itself (its queries' spans and metrics).
    fn chosen(&self, conn: Object, route: ReadRoute) -> (Conn, ReadRoute) {
        let labels = route.route();
        let span = tracing::Span::current();
        span.record("switchboard.db.pool", labels.pool);
        span.record("switchboard.db.route_reason", labels.reason);
        crate::platform::metrics::routed(labels.pool, labels.reason);
        (Conn::new(conn, labels), route)
    }

    /// Runs the read `f` on a connection chosen by [`Self::read`]. If a replica cancels it
    /// for a recovery conflict (SQLSTATE 40001 on a standby, PostgreSQL docs §27.4.2) or its
    /// connection breaks (server stopped, 57P01), runs it once more elsewhere: on another
    /// healthy replica, or on the primary when the read carries a consistency token (the
    /// other replica was never checked against it). A second failure is a 503, never a 500.
    ///
    /// Errors: as `f`, and 503 when no server is available.
    pub async fn reading<T, E, F>(&self, token: Option<Lsn>, f: F) -> Result<T, E>
    where
        E: RetryElsewhere + std::fmt::Display,
        F: for<'c> Fn(&'c Conn) -> Check<'c, T, E>,
    {
        let (conn, _, replica) = self.pick(token).await?;
        match (f(&conn).await, replica) {
            (Err(e), Some(failed)) if e.retry_elsewhere() => {
                drop(conn);
                tracing::info!(replica = %failed.name, error = %e, "read failed on a replica; retrying once elsewhere");
                // Another healthy replica, else the primary. A token-bound read on a replica
                // that was never checked against the token goes to the primary instead.
                let retry = match token {
                    None => self
                        .candidates()
                        .into_iter()
                        .find(|r| !Arc::ptr_eq(r, &failed)),
                    Some(_) => None,
                };
                let conn = match retry {
                    Some(r) => match r.pool.get().await {
                        Ok(c) => c,
                        Err(_) => self.primary.get().await.map_err(DbError::from)?,
                    },
                    None => self.primary.get().await.map_err(DbError::from)?,
                };
                let (conn, _) = self.chosen(conn, ReadRoute::ConflictRetry);
                f(&conn).await
            }
            (other, _) => other,
        }
    }

    /// Refuses a token for a WAL position the primary has not reached: no token this
    /// cluster issued can be ahead of it (one from another cluster, a restored backup or a
    /// leaked key can). Asked on `conn`, a primary connection, only when no replica showed
    /// the token replayed in time (not replayed, or no free connection to ask on) — the
    /// path such a token always ends on while a replica is healthy.
    ///
    /// Errors: [`DbError::TokenAhead`] (the edge answers 400 and clears the `ryw_lsn` cookie).
    async fn check_not_ahead(&self, conn: &Object, token: Lsn) -> Result<(), DbError> {
        let row = conn.query_one("SELECT pg_current_wal_lsn()", &[]).await?;
        let current: Lsn = row.get(0);
        if token > current {
            tracing::warn!(token = %token, primary = %current, "consistency token ahead of the primary");
            return Err(DbError::TokenAhead);
        }
        Ok(())
    }
}

/// Whether `conn` has replayed `token`: at once when the connection already reported a
/// position at or past it (`known`), else polling `pg_last_wal_replay_lsn()` on it until it
/// reaches `token` or `deadline` passes (each answer recorded in `known`).
async fn replayed(
    conn: &Object,
    known: &ReplayedByConnection,
    token: Lsn,
    deadline: tokio::time::Instant,
) -> Result<bool, tokio_postgres::Error> {
    if known.covers(&conn.statement_cache, token) {
        return Ok(true);
    }
    let stmt = conn
        .prepare_cached("SELECT pg_last_wal_replay_lsn()")
        .await?;
    let started = Instant::now();
    loop {
        let row = conn.query_one(&stmt, &[]).await?;
        let replayed: Option<PgLsn> = row.get(0);
        if let Some(r) = replayed {
            known.saw(&conn.statement_cache, r);
        }
        if replayed.is_some_and(|r| r >= token) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::debug!(
                waited_ms = started.elapsed().as_millis() as u64,
                "token not replayed"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
