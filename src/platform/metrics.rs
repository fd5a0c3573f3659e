//! Prometheus metrics (text exposition format 0.0.4), served on a separate internal port
//! (`METRICS_BIND`) that NGINX does not route. One registry per process; handlers and tasks
//! record into the families below, and gauges that describe state (pools, sockets, replicas)
//! are refreshed when scraped.
//!
//! Names: metrics that OpenTelemetry's stable semantic conventions define keep their names
//! and attributes as the OpenTelemetry-to-Prometheus translation writes them (dots become
//! underscores, the unit a suffix: `http.server.request.duration` in seconds is
//! `http_server_request_duration_seconds{http_request_method, http_route,
//! http_response_status_code}`); the project's own carry the `switchboard_` prefix; the
//! standard `process_*` family (CPU, memory, file descriptors, start time) comes from the
//! `prometheus` crate's process collector; `switchboard_build_info` is 1 with the build's facts
//! as labels (the Prometheus naming practices' "info" metric).

use std::{sync::OnceLock, time::Duration};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family of the service.
pub struct Metrics {
    registry: Registry,
    /// `http_server_request_duration_seconds{http_request_method, http_route,
    /// http_response_status_code}` (semantic conventions: `http.server.request.duration`).
    pub http_duration: HistogramVec,
    /// `db_client_operation_duration_seconds{db_system_name, db_operation_name,
    /// switchboard_db_pool}` (semantic conventions: `db.client.operation.duration`).
    pub db_operation_duration: HistogramVec,
    /// `db_client_connection_count{db_client_connection_pool_name,
    /// db_client_connection_state="idle"|"used"}` (semantic conventions).
    pub db_connections: IntGaugeVec,
    /// `db_client_connection_max{db_client_connection_pool_name}`: the pool's size limit.
    pub db_connections_max: IntGaugeVec,
    /// `db_client_connection_pending_requests{db_client_connection_pool_name}`: callers
    /// waiting for a connection.
    pub db_pending_requests: IntGaugeVec,
    /// `switchboard_db_read_routing_total{pool, reason}`: every routed read.
    pub routing: IntCounterVec,
    /// `switchboard_replica_lag_bytes{replica}` and `switchboard_replica_lag_seconds{replica}`.
    pub replica_lag_bytes: GaugeVec,
    /// See [`Self::replica_lag_bytes`].
    pub replica_lag_seconds: GaugeVec,
    /// `switchboard_replica_healthy{replica}`: 1 when used for reads.
    pub replica_healthy: IntGaugeVec,
    /// `switchboard_websocket_connections`: sockets open on this instance.
    pub sockets: IntGauge,
    /// `switchboard_fanout_delay_seconds`: from the commit of a change to its write on a socket.
    pub fanout_delay: Histogram,
    /// `switchboard_notify_queue_usage_ratio`: `pg_notification_queue_usage()` of the
    /// primary, 0–1.
    pub notify_queue_usage: Gauge,
    /// `switchboard_send_batch_size`: sends appended per group commit.
    pub send_batch_size: Histogram,
    /// `switchboard_send_queue_refused_total`: sends refused (503) by admission control (the
    /// queue full or its queueing delay past `SEND_QUEUE_MAX_WAIT_MS`).
    pub send_queue_refused: IntCounter,
    /// `switchboard_queue_depth{queue}`: rows waiting in a database queue
    /// ([`crate::platform::backlog`]).
    pub queue_depth: IntGaugeVec,
    /// `switchboard_queue_oldest_age_seconds{queue}`: how long the oldest of them has waited.
    pub queue_oldest_age: GaugeVec,
}

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    // The semantic conventions' advice for duration histograms (seconds).
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0,
    ];
    let pool_label = ["db_client_connection_pool_name"];
    let m = Metrics {
        http_duration: HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests",
            )
            .buckets(buckets.clone()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
            ],
        )?,
        db_operation_duration: HistogramVec::new(
            HistogramOpts::new(
                "db_client_operation_duration_seconds",
                "Duration of database client operations",
            )
            .buckets(buckets.clone()),
            &["db_system_name", "db_operation_name", "switchboard_db_pool"],
        )?,
        db_connections: IntGaugeVec::new(
            Opts::new(
                "db_client_connection_count",
                "Connections of a pool by state: idle or used",
            ),
            &[
                "db_client_connection_pool_name",
                "db_client_connection_state",
            ],
        )?,
        db_connections_max: IntGaugeVec::new(
            Opts::new(
                "db_client_connection_max",
                "The most connections a pool may open",
            ),
            &pool_label,
        )?,
        db_pending_requests: IntGaugeVec::new(
            Opts::new(
                "db_client_connection_pending_requests",
                "Callers waiting for a connection of a pool",
            ),
            &pool_label,
        )?,
        routing: IntCounterVec::new(
            Opts::new(
                "switchboard_db_read_routing_total",
                "Reads by the pool that served them and why",
            ),
            &["pool", "reason"],
        )?,
        replica_lag_bytes: GaugeVec::new(
            Opts::new(
                "switchboard_replica_lag_bytes",
                "WAL bytes a replica has yet to replay",
            ),
            &["replica"],
        )?,
        replica_lag_seconds: GaugeVec::new(
            Opts::new(
                "switchboard_replica_lag_seconds",
                "Replay delay of a replica",
            ),
            &["replica"],
        )?,
        replica_healthy: IntGaugeVec::new(
            Opts::new(
                "switchboard_replica_healthy",
                "1 when the replica is used for reads",
            ),
            &["replica"],
        )?,
        sockets: IntGauge::new(
            "switchboard_websocket_connections",
            "WebSockets open on this instance",
        )?,
        fanout_delay: Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_fanout_delay_seconds",
                "From a change's commit to its write on a socket",
            )
            .buckets(buckets),
        )?,
        notify_queue_usage: Gauge::new(
            "switchboard_notify_queue_usage_ratio",
            "Fraction of the primary's NOTIFY queue in use",
        )?,
        send_batch_size: Histogram::with_opts(
            HistogramOpts::new(
                "switchboard_send_batch_size",
                "Sends appended per group commit",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?,
        send_queue_refused: IntCounter::new(
            "switchboard_send_queue_refused_total",
            "Sends refused by admission control: send queue full or its delay too long",
        )?,
        queue_depth: IntGaugeVec::new(
            Opts::new(
                "switchboard_queue_depth",
                "Rows waiting in a database queue (outbox, notification queue)",
            ),
            &["queue"],
        )?,
        queue_oldest_age: GaugeVec::new(
            Opts::new(
                "switchboard_queue_oldest_age_seconds",
                "How long the oldest waiting row of a database queue has waited",
            ),
            &["queue"],
        )?,
        registry,
    };
    let r = &m.registry;
    r.register(Box::new(m.http_duration.clone()))?;
    r.register(Box::new(m.db_operation_duration.clone()))?;
    r.register(Box::new(m.db_connections.clone()))?;
    r.register(Box::new(m.db_connections_max.clone()))?;
    r.register(Box::new(m.db_pending_requests.clone()))?;
    r.register(Box::new(m.routing.clone()))?;
    r.register(Box::new(m.replica_lag_bytes.clone()))?;
    r.register(Box::new(m.replica_lag_seconds.clone()))?;
    r.register(Box::new(m.replica_healthy.clone()))?;
    r.register(Box::new(m.sockets.clone()))?;
    r.register(Box::new(m.fanout_delay.clone()))?;
    r.register(Box::new(m.notify_queue_usage.clone()))?;
    r.register(Box::new(m.send_batch_size.clone()))?;
    r.register(Box::new(m.send_queue_refused.clone()))?;
    r.register(Box::new(m.queue_depth.clone()))?;
    r.register(Box::new(m.queue_oldest_age.clone()))?;
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(m)
}

/// The process's metrics, or `None` if they could not be built (a bug; logged once).
pub fn metrics() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "metrics registry could not be built");
                None
            }
        })
        .as_ref()
}

/// Registers `switchboard_build_info{service, version, revision}` = 1: the package version,
/// and the source revision when the build was given one (`SWITCHBOARD_REVISION` at compile
/// time, as the container build does), else `unknown`.
fn register_build_info(service: &str) {
    let Some(m) = metrics() else { return };
    let info = IntGauge::with_opts(
        Opts::new(
            "switchboard_build_info",
            "Always 1; the build's version and revision as labels",
        )
        .const_label("service", service)
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label(
            "revision",
            option_env!("SWITCHBOARD_REVISION").unwrap_or("unknown"),
        ),
    );
    match info {
        Ok(info) => {
            info.set(1);
            if let Err(e) = m.registry.register(Box::new(info)) {
                tracing::warn!(error = %e, "build_info not registered");
            }
        }
        Err(e) => tracing::warn!(error = %e, "build_info not built"),
    }
}

/// Records one database operation's duration (`pool`: the [`crate::platform::db::Route`]'s).
pub fn observe_db_operation(pool: &str, operation: &str, took: Duration) {
    if let Some(m) = metrics() {
        m.db_operation_duration
            .with_label_values(&["postgresql", operation, pool])
            .observe(took.as_secs_f64());
    }
}

/// Records a deadpool pool's status under `pool`: used and idle connections, the limit, and
/// the callers waiting.
pub fn record_pool(pool: &str, status: deadpool_postgres::Status) {
    if let Some(m) = metrics() {
        let idle = status.available as i64;
        m.db_connections
            .with_label_values(&[pool, "idle"])
            .set(idle);
        m.db_connections
            .with_label_values(&[pool, "used"])
            .set((status.size as i64 - idle).max(0));
        m.db_connections_max
            .with_label_values(&[pool])
            .set(status.max_size as i64);
        m.db_pending_requests
            .with_label_values(&[pool])
            .set(status.waiting as i64);
    }
}

/// The registry in Prometheus text format.
pub fn render() -> String {
    let Some(m) = metrics() else {
        return String::new();
    };
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Starts the internal metrics server of `service` (`auth`, `messaging`) on `bind`:
/// `GET /metrics`. `refresh` updates state gauges just before each scrape.
///
/// Errors: the address cannot be bound.
pub fn serve(
    service: &str,
    bind: &str,
    tasks: &crate::platform::tasks::Tasks,
    refresh: impl Fn() + Clone + Send + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    register_build_info(service);
    let server = HttpServer::new(move || {
        let refresh = refresh.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                refresh();
                async {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4")
                        .body(render())
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(bind)
    .map_err(|e| anyhow::anyhow!("binding metrics address {bind}: {e}"))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("metrics address {bind} bound nothing"))?;
    let server = server.run();
    let handle = server.handle();
    let stopping = tasks.stopping();
    tasks.spawn_graceful(async move {
        tokio::pin!(server);
        tokio::select! {
            _ = &mut server => {}
            _ = stopping => {
                let _ = tokio::join!(handle.stop(false), server);
            }
        }
    });
    tracing::info!(%addr, "metrics on /metrics");
    Ok(addr)
}
