//! Database access: pools, migrations, WAL positions, and (in [`routing`]) read/write routing
//! with read-your-writes across replicas (DESIGN.md §5).

mod conn;
mod error;
pub mod routing;
pub mod tls;

pub use conn::{Conn, Endpoint, Primary, Route, Traced, Tx};
pub use error::{unique_violation, DbError};
pub use routing::{ReadRoute, Routing};

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
    Timeouts,
};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::PgLsn;

use crate::platform::config::PoolSettings;

/// Builds a connection pool for `url` (a libpq-style `postgres://` URL). Connections are made
/// lazily, so a database that is down at start-up does not stop the service from starting.
///
/// Errors: the URL does not parse.
pub fn pool(
    url: &SecretString,
    settings: &PoolSettings,
    application_name: &str,
) -> anyhow::Result<Pool> {
    let (mut cfg, tls) = config(url, application_name)?;
    let endpoint = Endpoint::of(&cfg);
    // A connection left inside a transaction (a task stopped mid-way) must not hold its
    // locks for long nor hand the transaction to the pool's next user: the server ends the
    // session after twice the statement limit (PostgreSQL docs §20.11.1,
    // idle_in_transaction_session_timeout), and the pool drops the closed connection.
    cfg.options(format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        settings.statement_timeout.as_millis(),
        settings.statement_timeout.as_millis() * 2
    ));
    let manager = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // Last in, first out: the connection handed back last is the next one handed out, so
    // light load keeps running on the few connections whose prepared statements are planned.
    // A cached plan is thrown away whenever a table it reads is analyzed or its size in the
    // catalog changes (autovacuum, every few seconds on hot tables; PostgreSQL docs, PREPARE,
    // "Notes"), and the next use on each connection plans again — for the group commit's
    // batch statement that is ~5 ms. Round robin (the default) spread every send over all
    // of the pool's connections, so each of them paid that after every invalidation. The
    // cost: a burst reaches the connections below, idle since the last one, whose plans are
    // as stale as round robin's; and an idle connection a network dropped silently is found
    // by TCP keepalives ([`config`]), not by the next request waiting on it.
    let pool = Pool::builder(manager)
        .max_size(settings.max_size)
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(settings.wait_timeout),
            create: Some(Duration::from_secs(1)),
            recycle: Some(Duration::from_secs(1)),
        })
        .build()
        .context("building connection pool")?;
    conn::register(&pool, endpoint);
    Ok(pool)
}

/// Builds the one-connection pool a health monitor checks `url` through: its own
/// connection, so that requests that have taken every connection of the server's request
/// pool ([`pool`]) are not read as the server being down — a busy pool would otherwise
/// mark a healthy replica unhealthy, move its reads to the primary, and make the storm
/// worse. Same URL, TLS and statement limit as `settings`; waits at most 800 ms for the
/// connection (the monitor's own check is never longer).
///
/// Errors: the URL does not parse.
pub fn monitor_pool(
    url: &SecretString,
    settings: &PoolSettings,
    application_name: &str,
) -> anyhow::Result<Pool> {
    let settings = PoolSettings {
        max_size: 1,
        wait_timeout: Duration::from_millis(800),
        statement_timeout: settings.statement_timeout,
    };
    pool(url, &settings, application_name)
}

/// Parses a `postgres://` URL into a client config with our application name and a 1 s
/// connect timeout, and the TLS connector its `sslmode`/`sslrootcert` call for ([`tls`]).
///
/// Errors: the URL does not parse, or its TLS settings are refused ([`tls::parse`]).
pub fn config(
    url: &SecretString,
    application_name: &str,
) -> anyhow::Result<(tokio_postgres::Config, tls::Tls)> {
    let (mut cfg, tls) = tls::parse(url.expose_secret())?;
    cfg.application_name(application_name);
    // Short: a primary that does not answer must turn into a quick 503, not a hang.
    cfg.connect_timeout(Duration::from_secs(1));
    // A connection that sits idle in a pool (LIFO leaves the ones below idle at light load)
    // is probed after 30 s without traffic, every 10 s, and closed after 3 probes unanswered
    // (TCP keepalive, RFC 1122 §4.2.3.6; the kernel's default waits 2 hours): a peer gone
    // without a FIN (a node lost, a NAT's idle timeout) is found within a minute, and the
    // pool drops the closed connection instead of handing it to a request. The probes also
    // keep a middlebox's idle timer from expiring.
    cfg.keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    Ok((cfg, tls))
}

/// Opens one connection outside any pool (for migrations, LISTEN and NOTIFY), driving it on
/// a background task. The returned future of that task ends when the connection closes.
///
/// Errors: the URL does not parse or the server cannot be reached.
pub async fn connect(
    url: &SecretString,
    application_name: &str,
) -> anyhow::Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let (cfg, tls) = config(url, application_name)?;
    let (client, connection) = cfg.connect(tls).await.context("connecting to database")?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok((client, handle))
}

/// Applies embedded refinery migrations under a session-level advisory lock, so several
/// instances starting at once apply each migration exactly once: the first holds the lock
/// and migrates, the others wait, then find nothing left to do.
///
/// `schema` is both where refinery keeps its history table and the lock's name.
///
/// Errors: the database is unreachable or a migration fails (the lock is released when the
/// connection closes).
pub async fn migrate(
    url: &SecretString,
    schema: &str,
    mut runner: refinery::Runner,
) -> anyhow::Result<()> {
    let (mut client, conn) = connect(url, &format!("switchboard-migrate-{schema}")).await?;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtext($1))",
            &[&format!("switchboard.migrate.{schema}")],
        )
        .await
        .context("taking the migration lock")?;
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .context("setting search_path")?;
    runner.set_migration_table_name("refinery_schema_history");
    let report = runner
        .run_async(&mut client)
        .await
        .with_context(|| format!("applying {schema} migrations"))?;
    for m in report.applied_migrations() {
        tracing::info!(schema, migration = %m, "migration applied");
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// A position in the primary's write-ahead log (WAL LSN), as PostgreSQL prints it
/// (`16/B374D848`: high and low 32 bits in hex), ordered as a 64-bit integer: the
/// `pg_lsn` type of `postgres-types` (PostgreSQL docs §8.20, "pg_lsn Type").
pub type Lsn = PgLsn;

/// The back-off of a dedicated connection (LISTEN, NOTIFY) that went away: 100 ms doubling
/// to 5 s, with jitter so instances do not reconnect in lockstep, for as long as it takes.
pub fn reconnect_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// The primary's current WAL LSN (`pg_current_wal_lsn()`): taken right after a write commits,
/// it is the caller's next consistency token.
///
/// Errors: the query fails.
pub async fn current_lsn(conn: &Object) -> Result<Lsn, DbError> {
    let stmt = conn.prepare_cached("SELECT pg_current_wal_lsn()").await?;
    let row = conn.query_one(&stmt, &[]).await?;
    Ok(row.get::<_, PgLsn>(0))
}

/// Records what already happened outside the database (a push or a mail that went out):
/// runs `write`, and once more if it fails. `write` takes its own connection from a pool each
/// time, so a connection lost in between — one an HTTP worker made, which ends with that worker
/// when the instance stops; a failover — does not leave the record undone (the thing would be
/// stranded half-done, or done twice). `write` must be idempotent. Logs the first failure.
///
/// Errors: the second attempt's.
pub async fn record_twice<T, E, F, Fut>(what: &str, mut write: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    match write().await {
        Ok(t) => Ok(t),
        Err(e) => {
            tracing::info!(error = %e, what, "recording failed; once more on another connection");
            write().await
        }
    }
}

/// The longest [`ping`] waits: under a readiness probe's usual 1 s timeout (Kubernetes'
/// `timeoutSeconds` default), so a slow primary reads as not ready, not as a probe that
/// timed out.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// `true` if a trivial query succeeds on a connection from `pool` within [`PING_TIMEOUT`]
/// (readiness checks). Give it a [`monitor_pool`]: a request pool a storm has exhausted is
/// not a server that is down.
pub async fn ping(pool: &Pool) -> bool {
    let ping = async {
        match pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    };
    tokio::time::timeout(PING_TIMEOUT, ping)
        .await
        .unwrap_or(false)
}
