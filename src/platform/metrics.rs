//! Prometheus metrics (text exposition format 0.0.4), served on a separate internal port
//! (`METRICS_BIND`) that NGINX does not route. One registry per process; handlers and tasks
//! record into the families below, and gauges that describe state (pools, sockets, replicas)
//! are refreshed when scraped.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family of the service.
pub struct Metrics {
    registry: Registry,
    /// `http_request_duration_seconds{route, method, status}`.
    pub http_duration: HistogramVec,
    /// `db_query_duration_seconds{pool, operation}`.
    pub db_query_duration: HistogramVec,
    /// `db_pool_connections{pool, state="size"|"available"|"waiting"}`.
    pub db_pool: IntGaugeVec,
    /// `db_read_routing_total{pool, reason}`: every routed read.
    pub routing: IntCounterVec,
    /// `replica_lag_bytes{replica}` and `replica_lag_seconds{replica}`.
    pub replica_lag_bytes: GaugeVec,
    pub replica_lag_seconds: GaugeVec,
    /// `replica_healthy{replica}`: 1 when used for reads.
    pub replica_healthy: IntGaugeVec,
    /// `websocket_connections`: sockets open on this instance.
    pub sockets: IntGauge,
    /// `fanout_delay_seconds`: from the commit of a change to its write on a socket.
    pub fanout_delay: Histogram,
    /// `notify_queue_usage`: `pg_notification_queue_usage()` of the primary, 0–1.
    pub notify_queue_usage: Gauge,
    /// `send_batch_size`: sends appended per group commit.
    pub send_batch_size: Histogram,
    /// `send_queue_refused_total`: sends refused (503) by admission control (the queue full
    /// or its queueing delay past `SEND_QUEUE_MAX_WAIT_MS`).
    pub send_queue_refused: IntCounter,
}

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let m = Metrics {
        http_duration: HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request duration")
                .buckets(buckets.clone()),
            &["route", "method", "status"],
        )?,
        db_query_duration: HistogramVec::new(
            HistogramOpts::new("db_query_duration_seconds", "Database query duration")
                .buckets(buckets.clone()),
            &["pool", "operation"],
        )?,
        db_pool: IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Connection pool size, idle and waiting",
            ),
            &["pool", "state"],
        )?,
        routing: IntCounterVec::new(
            Opts::new(
                "db_read_routing_total",
                "Reads by the pool that served them and why",
            ),
            &["pool", "reason"],
        )?,
        replica_lag_bytes: GaugeVec::new(
            Opts::new("replica_lag_bytes", "WAL bytes a replica has yet to replay"),
            &["replica"],
        )?,
        replica_lag_seconds: GaugeVec::new(
            Opts::new("replica_lag_seconds", "Replay delay of a replica"),
            &["replica"],
        )?,
        replica_healthy: IntGaugeVec::new(
            Opts::new("replica_healthy", "1 when the replica is used for reads"),
            &["replica"],
        )?,
        sockets: IntGauge::new("websocket_connections", "WebSockets open on this instance")?,
        fanout_delay: Histogram::with_opts(
            HistogramOpts::new(
                "fanout_delay_seconds",
                "From a change's commit to its write on a socket",
            )
            .buckets(buckets),
        )?,
        notify_queue_usage: Gauge::new(
            "notify_queue_usage",
            "Fraction of the primary's NOTIFY queue in use",
        )?,
        send_batch_size: Histogram::with_opts(
            HistogramOpts::new("send_batch_size", "Sends appended per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?,
        send_queue_refused: IntCounter::new(
            "send_queue_refused_total",
            "Sends refused by admission control: send queue full or its delay too long",
        )?,
        registry,
    };
    m.registry.register(Box::new(m.http_duration.clone()))?;
    m.registry.register(Box::new(m.db_query_duration.clone()))?;
    m.registry.register(Box::new(m.db_pool.clone()))?;
    m.registry.register(Box::new(m.routing.clone()))?;
    m.registry.register(Box::new(m.replica_lag_bytes.clone()))?;
    m.registry
        .register(Box::new(m.replica_lag_seconds.clone()))?;
    m.registry.register(Box::new(m.replica_healthy.clone()))?;
    m.registry.register(Box::new(m.sockets.clone()))?;
    m.registry.register(Box::new(m.fanout_delay.clone()))?;
    m.registry
        .register(Box::new(m.notify_queue_usage.clone()))?;
    m.registry.register(Box::new(m.send_batch_size.clone()))?;
    m.registry
        .register(Box::new(m.send_queue_refused.clone()))?;
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

/// Records a deadpool pool's status under `pool`.
pub fn record_pool(pool: &str, status: deadpool_postgres::Status) {
    if let Some(m) = metrics() {
        m.db_pool
            .with_label_values(&[pool, "size"])
            .set(status.size as i64);
        m.db_pool
            .with_label_values(&[pool, "available"])
            .set(status.available as i64);
        m.db_pool
            .with_label_values(&[pool, "waiting"])
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

/// Starts the internal metrics server on `bind`: `GET /metrics`. `refresh` updates state
/// gauges just before each scrape.
///
/// Errors: the address cannot be bound.
pub fn serve(
    bind: &str,
    tasks: &crate::platform::tasks::Tasks,
    refresh: impl Fn() + Clone + Send + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    use actix_web::{web, App, HttpResponse, HttpServer};
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
