//! Metrics in the OpenMetrics text format (1.0; Prometheus scrapes it), served on a separate
//! internal port (`METRICS_BIND`) that NGINX does not route. One registry per process
//! (the `prometheus-client` crate); handlers and tasks record through the functions below,
//! and gauges that describe state (pools, sockets, replicas) are refreshed when scraped.
//!
//! Names: metrics that OpenTelemetry's stable semantic conventions define keep their names
//! and attributes as the OpenTelemetry-to-Prometheus translation writes them (dots become
//! underscores, the unit a suffix: `http.server.request.duration` in seconds is
//! `http_server_request_duration_seconds{http_request_method, http_route,
//! http_response_status_code}`); the project's own carry the `switchboard_` prefix; the
//! standard `process_*` family and `switchboard_build_info` come from [`process`].
//!
//! Exemplars: the request and database latency histograms carry, on the bucket a sample fell
//! in, the `trace_id` of a sampled trace that took that long (OpenMetrics exemplars; Prometheus
//! keeps them with `--enable-feature=exemplar-storage`), so a latency spike leads to a trace.

mod process;

use std::{
    sync::{atomic::AtomicU64, OnceLock},
    time::Duration,
};

use prometheus_client::{
    metrics::{
        counter::Counter, exemplar::HistogramWithExemplars, family::Family, gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

/// A metric's labels, by name.
type Labels = Vec<(&'static str, String)>;
/// An exemplar's labels: `trace_id`.
type TraceLabel = Vec<(&'static str, String)>;
type Durations =
    Family<Labels, HistogramWithExemplars<TraceLabel>, fn() -> HistogramWithExemplars<TraceLabel>>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The semantic conventions' advice for duration histograms (seconds).
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn durations() -> HistogramWithExemplars<TraceLabel> {
    HistogramWithExemplars::new(DURATION_BUCKETS.into_iter())
}

/// Every metric family of the service.
struct Metrics {
    registry: Registry,
    /// `http_server_request_duration_seconds{http_request_method, http_route,
    /// http_response_status_code}` (semantic conventions: `http.server.request.duration`).
    http_duration: Durations,
    /// `db_client_operation_duration_seconds{db_system_name, db_operation_name,
    /// switchboard_db_pool}` (semantic conventions: `db.client.operation.duration`).
    db_operation_duration: Durations,
    /// `db_client_connection_count{db_client_connection_pool_name,
    /// db_client_connection_state="idle"|"used"}` (semantic conventions).
    db_connections: Family<Labels, Gauge>,
    /// `db_client_connection_max{db_client_connection_pool_name}`.
    db_connections_max: Family<Labels, Gauge>,
    /// `db_client_connection_pending_requests{db_client_connection_pool_name}`.
    db_pending_requests: Family<Labels, Gauge>,
    /// `switchboard_db_read_routing_total{pool, reason}`.
    routing: Family<Labels, Counter>,
    /// `switchboard_replica_lag_bytes{replica}`.
    replica_lag_bytes: Family<Labels, FloatGauge>,
    /// `switchboard_replica_lag_seconds{replica}`.
    replica_lag_seconds: Family<Labels, FloatGauge>,
    /// `switchboard_replica_healthy{replica}`.
    replica_healthy: Family<Labels, Gauge>,
    /// `switchboard_websocket_connections`.
    sockets: Gauge,
    /// `switchboard_fanout_delay_seconds`.
    fanout_delay: Histogram,
    /// `switchboard_notify_queue_usage_ratio`.
    notify_queue_usage: FloatGauge,
    /// `switchboard_send_batch_size`.
    send_batch_size: Histogram,
    /// `switchboard_send_queue_refused_total`.
    send_queue_refused: Counter,
    /// `switchboard_send_share_refused_total`.
    send_share_refused: Counter,
    /// `switchboard_send_admission_limit`.
    send_admission_limit: FloatGauge,
    /// `switchboard_queue_depth{queue}`.
    queue_depth: Family<Labels, Gauge>,
    /// `switchboard_queue_oldest_age_seconds{queue}`.
    queue_oldest_age: Family<Labels, FloatGauge>,
}

fn build() -> Metrics {
    let mut m = Metrics {
        http_duration: Family::new_with_constructor(durations),
        db_operation_duration: Family::new_with_constructor(durations),
        db_connections: Family::default(),
        db_connections_max: Family::default(),
        db_pending_requests: Family::default(),
        routing: Family::default(),
        replica_lag_bytes: Family::default(),
        replica_lag_seconds: Family::default(),
        replica_healthy: Family::default(),
        sockets: Gauge::default(),
        fanout_delay: Histogram::new(DURATION_BUCKETS),
        notify_queue_usage: FloatGauge::default(),
        send_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        send_queue_refused: Counter::default(),
        send_share_refused: Counter::default(),
        send_admission_limit: FloatGauge::default(),
        queue_depth: Family::default(),
        queue_oldest_age: Family::default(),
        registry: Registry::default(),
    };
    let r = &mut m.registry;
    r.register(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests",
        m.http_duration.clone(),
    );
    r.register(
        "db_client_operation_duration_seconds",
        "Duration of database client operations",
        m.db_operation_duration.clone(),
    );
    r.register(
        "db_client_connection_count",
        "Connections of a pool by state: idle or used",
        m.db_connections.clone(),
    );
    r.register(
        "db_client_connection_max",
        "The most connections a pool may open",
        m.db_connections_max.clone(),
    );
    r.register(
        "db_client_connection_pending_requests",
        "Callers waiting for a connection of a pool",
        m.db_pending_requests.clone(),
    );
    r.register(
        "switchboard_db_read_routing",
        "Reads by the pool that served them and why",
        m.routing.clone(),
    );
    r.register(
        "switchboard_replica_lag_bytes",
        "WAL bytes a replica has yet to replay",
        m.replica_lag_bytes.clone(),
    );
    r.register(
        "switchboard_replica_lag_seconds",
        "Replay delay of a replica",
        m.replica_lag_seconds.clone(),
    );
    r.register(
        "switchboard_replica_healthy",
        "1 when the replica is used for reads",
        m.replica_healthy.clone(),
    );
    r.register(
        "switchboard_websocket_connections",
        "WebSockets open on this instance",
        m.sockets.clone(),
    );
    r.register(
        "switchboard_fanout_delay_seconds",
        "From a change's commit to its write on a socket",
        m.fanout_delay.clone(),
    );
    r.register(
        "switchboard_notify_queue_usage_ratio",
        "Fraction of the primary's NOTIFY queue in use",
        m.notify_queue_usage.clone(),
    );
    r.register(
        "switchboard_send_batch_size",
        "Sends appended per group commit",
        m.send_batch_size.clone(),
    );
    r.register(
        "switchboard_send_queue_refused",
        "Sends refused by admission control: the instance held as many sends as its limit allowed",
        m.send_queue_refused.clone(),
    );
    r.register(
        "switchboard_send_share_refused",
        "Sends refused because their sender already held half of admission control's limit: one user sending faster than they are answered",
        m.send_share_refused.clone(),
    );
    r.register(
        "switchboard_send_admission_limit",
        "Sends an instance may hold at once (queued or being appended), as admission control last set it from their queueing delay",
        m.send_admission_limit.clone(),
    );
    r.register(
        "switchboard_queue_depth",
        "Rows waiting in a database queue (outbox, notification queue)",
        m.queue_depth.clone(),
    );
    r.register(
        "switchboard_queue_oldest_age_seconds",
        "How long the oldest waiting row of a database queue has waited",
        m.queue_oldest_age.clone(),
    );
    r.register_collector(Box::new(process::ProcessCollector));
    r.register_collector(Box::new(process::BuildInfo));
    m
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(build)
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn exemplar(trace_id: Option<&str>) -> Option<TraceLabel> {
    trace_id.map(|t| vec![("trace_id", t.to_owned())])
}

/// Records one HTTP request's duration; `trace_id`: its trace when sampled (the exemplar).
pub fn observe_http(
    method: &str,
    route: &str,
    status: u16,
    took: Duration,
    trace_id: Option<&str>,
) {
    metrics()
        .http_duration
        .get_or_create(&labels([
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", &status.to_string()),
        ]))
        .observe(took.as_secs_f64(), exemplar(trace_id), None);
}

/// Records one database operation's duration (`pool`: the [`crate::platform::db::Route`]'s;
/// `trace_id`: the sampled trace it ran in, the exemplar).
pub fn observe_db_operation(pool: &str, operation: &str, took: Duration, trace_id: Option<&str>) {
    metrics()
        .db_operation_duration
        .get_or_create(&labels([
            ("db_system_name", "postgresql"),
            ("db_operation_name", operation),
            ("switchboard_db_pool", pool),
        ]))
        .observe(took.as_secs_f64(), exemplar(trace_id), None);
}

/// Records a deadpool pool's status under `pool`: used and idle connections, the limit, and
/// the callers waiting.
pub fn record_pool(pool: &str, status: deadpool_postgres::Status) {
    let m = metrics();
    let idle = status.available as i64;
    let state = |s| {
        labels([
            ("db_client_connection_pool_name", pool),
            ("db_client_connection_state", s),
        ])
    };
    m.db_connections.get_or_create(&state("idle")).set(idle);
    m.db_connections
        .get_or_create(&state("used"))
        .set((status.size as i64 - idle).max(0));
    let name = labels([("db_client_connection_pool_name", pool)]);
    m.db_connections_max
        .get_or_create(&name)
        .set(status.max_size as i64);
    m.db_pending_requests
        .get_or_create(&name)
        .set(status.waiting as i64);
}

/// Counts a routed read.
pub fn routed(pool: &str, reason: &str) {
    metrics()
        .routing
        .get_or_create(&labels([("pool", pool), ("reason", reason)]))
        .inc();
}

/// Records what the replica monitor last saw of `replica`.
pub fn record_replica(replica: &str, healthy: bool, lag_bytes: f64, lag_seconds: f64) {
    let m = metrics();
    let name = labels([("replica", replica)]);
    m.replica_healthy
        .get_or_create(&name)
        .set(i64::from(healthy));
    m.replica_lag_bytes.get_or_create(&name).set(lag_bytes);
    m.replica_lag_seconds.get_or_create(&name).set(lag_seconds);
}

/// Sets the number of sockets open on this instance.
pub fn set_sockets(open: usize) {
    metrics().sockets.set(open as i64);
}

/// Records one delivery's delay from the change's commit to its write on a socket.
pub fn observe_fanout_delay(seconds: f64) {
    metrics().fanout_delay.observe(seconds);
}

/// Sets the primary's `pg_notification_queue_usage()` (0–1).
pub fn set_notify_queue_usage(ratio: f64) {
    metrics().notify_queue_usage.set(ratio);
}

/// Records the size of one group commit.
pub fn observe_send_batch(sends: usize) {
    metrics().send_batch_size.observe(sends as f64);
}

/// Records admission control's limit on sends in flight (`messaging::admission`).
pub fn record_send_admission_limit(limit: f64) {
    metrics().send_admission_limit.set(limit);
}

/// Counts a send refused by admission control: the instance held as many as its limit.
pub fn send_refused() {
    metrics().send_queue_refused.inc();
}

/// Counts a send refused because its sender held their share of the limit
/// (`messaging::admission`, "A user's share").
pub fn send_share_refused() {
    metrics().send_share_refused.inc();
}

/// Records a database queue's depth and the age of its oldest row (seconds).
pub fn record_queue(queue: &str, depth: i64, oldest_age_seconds: f64) {
    let m = metrics();
    let name = labels([("queue", queue)]);
    m.queue_depth.get_or_create(&name).set(depth);
    m.queue_oldest_age
        .get_or_create(&name)
        .set(oldest_age_seconds);
}

/// The registry in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &metrics().registry) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    out
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
    process::set_service(service);
    let server = HttpServer::new(move || {
        let refresh = refresh.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                refresh();
                async {
                    HttpResponse::Ok()
                        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
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
