//! Building and running each service ([`App`]): the binaries call [`run_auth`] or
//! [`run_messaging`] and nothing else; the tests build an [`App`] in-process.

use std::{sync::Arc, time::Duration};

use std::{future::Future, net::SocketAddr, pin::Pin};

use actix_web::{middleware::from_fn, web, App as ActixApp, HttpServer};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{keys::SigningKeys, AuthState},
    messaging::{
        ended_sessions::EndedSessions,
        group_commit::{GroupCommitSettings, SendQueue},
        MessagingState,
    },
    platform::access::Verifier,
    platform::bus::Publisher,
    platform::config::{AuthConfig, MessagingConfig, MigrateConfig, PoolSettings},
    platform::db::{
        self,
        routing::{ReplicaPolicy, Routing, ServerPools},
    },
    platform::error,
    platform::http::request_context,
    platform::tasks::Tasks,
    realtime::{
        hub::{Command, Hub},
        listener,
        presence::Presence,
        Live,
    },
};

/// The auth service's database queues, sampled for the backlog metrics: account mail not yet
/// sent.
const AUTH_QUEUES: &[crate::platform::backlog::Queue] = &[crate::platform::backlog::Queue {
    name: "auth.mail_outbox",
    sql: "SELECT count(*), COALESCE(EXTRACT(epoch FROM now() - min(created_at)), 0)::float8
          FROM auth.mail_outbox WHERE sent_at IS NULL",
}];

/// The messaging service's database queues, sampled for the backlog metrics: digests not yet
/// sent, messages whose notifications (feed, push, digest) are not yet worked out, and Web
/// Push deliveries not yet made (ages of the last two: how far past due the oldest is).
const MESSAGING_QUEUES: &[crate::platform::backlog::Queue] = &[
    crate::platform::backlog::Queue {
        name: "messaging.mail_outbox",
        sql: "SELECT count(*), COALESCE(EXTRACT(epoch FROM now() - min(created_at)), 0)::float8
              FROM messaging.mail_outbox WHERE sent_at IS NULL",
    },
    crate::platform::backlog::Queue {
        name: "messaging.notify_queue",
        sql: "SELECT count(*),
                     GREATEST(COALESCE(EXTRACT(epoch FROM now() - min(due_at)), 0), 0)::float8
              FROM messaging.notify_queue",
    },
    crate::platform::backlog::Queue {
        name: "messaging.push_deliveries",
        sql: "SELECT count(*),
                     GREATEST(COALESCE(EXTRACT(epoch FROM now() - min(due_at)), 0), 0)::float8
              FROM messaging.push_deliveries WHERE state = 'pending'",
    },
];

/// The SQL migrations of both schemas, embedded at build time from `migrations/`.
pub mod migrations {
    /// `migrations/auth`: applied by the auth service as `switchboard_auth`.
    pub mod auth {
        refinery::embed_migrations!("migrations/auth");
    }
    /// `migrations/messaging`: applied by the messaging service as `switchboard_messaging`.
    pub mod messaging {
        refinery::embed_migrations!("migrations/messaging");
    }
}

/// Largest JSON request body, in bytes.
const JSON_LIMIT: usize = 64 * 1024;

/// Runs migrations, retrying for up to a minute while the database is not reachable yet
/// (containers starting together).
async fn migrate_with_retry(
    url: &SecretString,
    schema: &str,
    runner: fn() -> refinery::Runner,
) -> anyhow::Result<()> {
    use backon::Retryable;
    (|| db::migrate(url, schema, runner()))
        .retry(
            backon::ConstantBuilder::default()
                .with_delay(Duration::from_secs(1))
                .with_max_times(60),
        )
        .notify(|e, _| {
            tracing::warn!(
                error = format!("{e:#}"),
                "migrations not applied yet; retrying"
            );
        })
        .await
}

/// Applies both schemas' migrations, each as its own role (`AUTH_DATABASE_URL`,
/// `MESSAGING_DATABASE_URL`), retrying for up to a minute while the database starts.
///
/// Errors: a missing or placeholder URL, one that does not parse, or a migration that fails.
pub async fn migrate_all(cfg: &MigrateConfig) -> anyhow::Result<()> {
    let (auth, messaging) = cfg.urls()?;
    migrate_with_retry(&auth, "auth", migrations::auth::migrations::runner).await?;
    migrate_with_retry(
        &messaging,
        "messaging",
        migrations::messaging::migrations::runner,
    )
    .await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// A built service instance: its listeners are bound (so [`App::port`] is known, port 0
/// picks a free one), its background tasks run, and [`App::run_until_stopped`] serves until
/// SIGINT/SIGTERM or [`App::stop_token`] is cancelled. The binaries and the tests both use it.
pub struct App {
    service: &'static str,
    server: actix_web::dev::Server,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    tasks: Tasks,
    stop: CancellationToken,
    /// Runs first when the service stops (messaging: sockets close with 1001, presence rows go).
    on_stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// How long background tasks get to end once the HTTP server stopped.
const TASKS_GRACE: Duration = Duration::from_secs(5);

impl App {
    /// Builds the auth service: keys, migrations, pool, metrics, routes.
    ///
    /// Errors: invalid keys, migrations that fail, or an address that cannot be bound.
    pub async fn build_auth(cfg: AuthConfig) -> anyhow::Result<Self> {
        let keys = SigningKeys::load(
            cfg.signing_key_pem.as_ref().map(|p| p.expose_secret()),
            &cfg.signing_key_files,
        )?;
        migrate_with_retry(
            &cfg.database_url,
            "auth",
            migrations::auth::migrations::runner,
        )
        .await?;
        let tasks = Tasks::new();
        let pool = db::Primary::new(db::pool(&cfg.database_url, &cfg.pool, "switchboard-auth")?);
        let monitor = db::monitor_pool(&cfg.database_url, &cfg.pool, "switchboard-auth-monitor")?;
        let scraped = pool.pool().clone();
        let metrics_addr =
            crate::platform::metrics::serve("auth", &cfg.metrics_bind, &tasks, move || {
                crate::platform::metrics::record_pool("primary", scraped.status());
            })?;
        let outbox = crate::platform::mail::Outbox::new("auth.mail_outbox", &cfg.mail)?;
        crate::platform::mail::spawn(&outbox, pool.clone(), &cfg.mail, &tasks)?;
        crate::platform::backlog::spawn(pool.pool().clone(), AUTH_QUEUES, &tasks);
        crate::auth::audit::spawn_anchor(pool.clone(), &tasks);
        let (bind, workers) = (cfg.bind.clone(), cfg.server.http_workers);
        let state: crate::auth::State = Arc::new(AuthState::new(pool, monitor, keys, outbox, cfg)?);
        let origins = state.cfg.web.allowed_origins.clone();
        let (server, addr) = serve(
            "auth",
            &bind,
            workers,
            origins,
            state,
            |cfg: &mut web::ServiceConfig| {
                crate::openapi::configure_auth(cfg);
                crate::auth::routes::configure(cfg);
            },
        )?;
        Ok(Self {
            service: "auth",
            server,
            addr,
            metrics_addr,
            tasks,
            stop: CancellationToken::new(),
            on_stop: None,
        })
    }

    /// Builds the messaging service: migrations, pools with replica routing and its monitor,
    /// JWKS, bus publisher, hub, LISTEN task, presence, routes.
    ///
    /// Errors: migrations that fail, bad URLs, or an address that cannot be bound.
    pub async fn build_messaging(cfg: MessagingConfig) -> anyhow::Result<Self> {
        migrate_with_retry(
            &cfg.primary_url,
            "messaging",
            migrations::messaging::migrations::runner,
        )
        .await?;
        let tasks = Tasks::new();
        // Each connection names its instance in `pg_stat_activity` (PostgreSQL truncates
        // names to 63 bytes).
        let named = |role: &str| format!("switchboard-{role} {}", cfg.instance_id);
        let server = |url, pool: &PoolSettings| {
            anyhow::Ok(ServerPools {
                requests: db::pool(url, pool, &named("messaging"))?,
                monitor: db::monitor_pool(url, pool, &named("monitor"))?,
            })
        };
        let replica_pool = cfg.replica_pool_settings();
        let primary_pools = server(&cfg.primary_url, &cfg.pool)?;
        let primary = primary_pools.requests.clone();
        let replicas = cfg
            .replica_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let pools = server(url, &replica_pool)?;
                let host = db::tls::parse(url.expose_secret())
                    .ok()
                    .map(|(c, _)| {
                        format!("{:?}:{:?}", c.get_hosts().first(), c.get_ports().first())
                    })
                    .unwrap_or_default();
                tracing::info!(replica = i + 1, %host, "replica configured");
                anyhow::Ok((format!("replica-{}", i + 1), pools))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let routing = Routing::new(
            primary_pools,
            replicas,
            ReplicaPolicy {
                max_lag_bytes: cfg.replica_max_lag_bytes,
                max_lag: cfg.replica_max_lag,
                check_interval: cfg.replica_check_interval,
                ryw_wait: cfg.ryw_wait,
            },
        );
        routing.spawn_monitor(&tasks);
        let scraped = routing.clone();
        let metrics_addr =
            crate::platform::metrics::serve("messaging", &cfg.metrics_bind, &tasks, move || {
                crate::platform::metrics::record_pool("primary", scraped.primary_pool().status());
                for r in scraped.replicas() {
                    crate::platform::metrics::record_pool(&r.name, r.pool.status());
                }
            })?;
        let verifier = Verifier::remote(cfg.jwks_url.clone(), &cfg.tokens, cfg.jwks_min_refresh)?;
        if let Err(e) = verifier.refresh().await {
            tracing::warn!(error = %e, "JWKS not available yet; will fetch on first token");
        }
        let hub = Hub::spawn(&tasks);
        let publisher = Publisher::spawn(cfg.primary_url.clone(), named("publisher"), &tasks);
        let ended = Arc::new(EndedSessions::new(cfg.session_end_memory));
        listener::spawn(
            cfg.primary_url.clone(),
            named("listener"),
            primary.clone(),
            hub.clone(),
            ended.clone(),
            &tasks,
        );
        let presence = Presence::spawn(
            cfg.instance_id.clone(),
            primary.clone(),
            publisher.clone(),
            cfg.presence_grace,
            &tasks,
        );
        let bind = cfg.bind.clone();
        let sends = SendQueue::spawn(
            routing.clone(),
            GroupCommitSettings {
                queue_capacity: cfg.send_queue_capacity,
                max_wait: cfg.send_queue_max_wait,
                batch_max: cfg.send_batch_max,
                writers: cfg.send_writers,
                rate_limit: i64::from(cfg.send_rate_limit),
                rate_window: cfg.send_rate_window,
                mention_all_members: cfg.mention_all_members,
            },
            &tasks,
        );
        let state: crate::messaging::State = Arc::new(MessagingState {
            db: routing,
            ended,
            verifier,
            publisher,
            sends,
            push: crate::messaging::notifications::push::Push::from_settings(&cfg.push)?
                .map(Arc::new),
            cfg,
        });
        crate::messaging::notifications::worker::spawn(
            state.clone(),
            state.cfg.notify_poll_interval,
            &tasks,
        );
        let push_sender = crate::messaging::notifications::push::spawn_sender(
            state.clone(),
            state.cfg.notify_poll_interval,
            &tasks,
        );
        crate::platform::backlog::spawn(state.db.primary_pool().clone(), MESSAGING_QUEUES, &tasks);
        // Digests of missed messages go out through an outbox of messaging's own, delivered
        // like account mail.
        let digests = crate::platform::mail::Outbox::new("messaging.mail_outbox", &state.cfg.mail)?;
        crate::platform::mail::spawn(
            &digests,
            crate::platform::db::Primary::new(state.db.primary_pool().clone()),
            &state.cfg.mail,
            &tasks,
        )?;
        crate::messaging::notifications::digest::spawn(
            state.clone(),
            digests,
            state
                .cfg
                .notify_poll_interval
                .max(std::time::Duration::from_millis(500)),
            &tasks,
        );
        let live = Arc::new(Live {
            hub: hub.clone(),
            presence: presence.clone(),
        });
        let origins = state.cfg.web.allowed_origins.clone();
        let (server, addr) = serve(
            "messaging",
            &bind,
            state.cfg.server.http_workers,
            origins,
            state,
            move |cfg: &mut web::ServiceConfig| {
                // Live delivery sits on top of messaging: its state and routes are added here.
                cfg.app_data(web::Data::new(live.clone()));
                crate::realtime::configure(cfg);
                crate::openapi::configure_messaging(cfg);
                crate::messaging::configure(cfg);
            },
        )?;
        // Graceful shutdown (DESIGN.md §4): every socket closes with 1001 so its client
        // reconnects to another instance and resumes; this instance's presence rows go. The
        // push sender stops first, while the HTTP workers' connections still work
        // (`SenderStop`).
        let on_stop = Box::pin(async move {
            if let Some(sender) = push_sender {
                sender.stop(TASKS_GRACE).await;
            }
            hub.send(Command::Shutdown);
            presence.shutdown().await;
        });
        Ok(Self {
            service: "messaging",
            server,
            addr,
            metrics_addr,
            tasks,
            stop: CancellationToken::new(),
            on_stop: Some(on_stop),
        })
    }

    /// The API's bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The metrics endpoint's bound port.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_addr.port()
    }

    /// Cancelling this token stops the service as SIGTERM does.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until SIGINT/SIGTERM or the stop token, then stops in order: the service's own
    /// goodbye (the push sender, sockets, presence), the HTTP server (in-flight requests get
    /// 10 s), then the background tasks (the publisher sends what is queued; 5 s at most).
    ///
    /// Errors: the HTTP server failed.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        tracing::info!(service = self.service, addr = %self.addr, "listening");
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            r = &mut server => Some(r),
            _ = shutdown_signal() => None,
            _ = self.stop.cancelled() => None,
        };
        let result = match result {
            Some(r) => r,
            None => {
                tracing::info!(service = self.service, "shutting down");
                if let Some(goodbye) = self.on_stop.take() {
                    goodbye.await;
                }
                handle.stop(true).await;
                server.await
            }
        };
        if !self.tasks.stop(TASKS_GRACE).await {
            tracing::warn!(
                service = self.service,
                running = self.tasks.running(),
                "background tasks still running after the grace period"
            );
        }
        tracing::info!(service = self.service, "stopped");
        result??;
        Ok(())
    }
}

/// Starts the auth service and serves until SIGINT/SIGTERM (graceful: in-flight requests
/// finish).
///
/// Errors: see [`App::build_auth`] and [`App::run_until_stopped`].
pub async fn run_auth(cfg: AuthConfig) -> anyhow::Result<()> {
    crate::platform::open_files::raise();
    App::build_auth(cfg).await?.run_until_stopped().await
}

/// Starts the messaging service and serves until SIGINT/SIGTERM.
///
/// Errors: see [`App::build_messaging`] and [`App::run_until_stopped`].
pub async fn run_messaging(cfg: MessagingConfig) -> anyhow::Result<()> {
    crate::platform::open_files::raise();
    App::build_messaging(cfg).await?.run_until_stopped().await
}

/// CORS (Fetch standard, "CORS protocol"): only the listed origins, with credentials, the
/// headers the API uses; never `*`. A request from another origin is served without CORS
/// headers (the browser then hides the answer), so the CSRF check can still answer 403.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-csrf"),
            header::HeaderName::from_static("x-consistency-token"),
            header::HeaderName::from_static("traceparent"),
        ])
        // What a script may read of an answer: the read-your-writes token, back-off, and
        // what a download carries (Fetch standard, "CORS-safelisted response header").
        .expose_headers([
            header::HeaderName::from_static("x-consistency-token"),
            header::RETRY_AFTER,
            header::ETAG,
            header::CONTENT_DISPOSITION,
            header::CONTENT_RANGE,
        ])
        .supports_credentials()
        .block_on_origin_mismatch(false)
        .max_age(600);
    for o in origins {
        cors = cors.allowed_origin(o);
    }
    cors
}

/// Binds `configure`'s routes with the shared plumbing — request context, CORS for the
/// allowed origins, problem+json extractor errors, 404 default; in-flight requests get 10 s
/// when it stops. `workers`: HTTP worker threads (`HTTP_WORKERS`; default: actix's, one per
/// core this process may use). Returns the server (not yet polled) and its bound address.
///
/// Errors: the address cannot be bound.
fn serve<S, F>(
    service: &'static str,
    bind: &str,
    workers: Option<u16>,
    origins: Vec<String>,
    state: S,
    configure: F,
) -> anyhow::Result<(actix_web::dev::Server, SocketAddr)>
where
    S: Clone + Send + 'static,
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let mut server = HttpServer::new(move || {
        ActixApp::new()
            .wrap(cors(&origins))
            .wrap(from_fn(request_context))
            .app_data(web::Data::new(state.clone()))
            .app_data(error::json_config(JSON_LIMIT))
            .app_data(error::path_config())
            .app_data(error::query_config())
            .configure(configure.clone())
            .default_service(web::to(error::not_found))
    })
    // Idle connections outlive NGINX's upstream keepalive_timeout (60 s,
    // nginx/switchboard.conf.template): the proxy always closes first. With actix's default
    // (5 s) a request NGINX sent on a connection the service was closing came back as a 502,
    // and NGINX does not retry a POST.
    .keep_alive(UPSTREAM_KEEP_ALIVE)
    // Every write leaves at once (TCP_NODELAY, RFC 1122 §4.2.3.4 lets an application turn
    // Nagle's algorithm off): actix leaves it on, so a WebSocket frame written while the
    // previous one was still unacknowledged would wait for that ACK, which NGINX's side may
    // delay by up to 40 ms (Linux's delayed ACK). NGINX sets it on its own sockets
    // (`tcp_nodelay on`, its default).
    .tcp_nodelay(true);
    if let Some(n) = workers {
        server = server.workers(usize::from(n));
    }
    let server = server
        .bind(bind)
        .with_context(|| format!("{service}: binding {bind}"))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .with_context(|| format!("{service}: {bind} bound nothing"))?;
    Ok((server.shutdown_timeout(10).disable_signals().run(), addr))
}

/// How long an idle HTTP connection stays open: longer than the proxy's upstream
/// `keepalive_timeout` (60 s), so the proxy, not the service, ends an idle connection.
pub const UPSTREAM_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(75);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd, the run script).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
