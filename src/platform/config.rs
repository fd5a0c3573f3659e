//! Configuration from environment variables (12-factor, DESIGN.md §6), with defaults that run
//! the local stack started by `scripts/run.sh`.
//!
//! Every variable has a default except the secrets and database URLs, which are required
//! unless the development switch is set ([`crate::platform::secrets`]); a present but unparsable value
//! is a startup error naming the variable, never a silent fallback.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::platform::env::{bool_or, list_or, parse_or, var_or};
use crate::platform::secrets::{self, KeyRing};

/// Access-token validation settings shared by both services (DESIGN.md §2).
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// `iss` claim: `JWT_ISSUER`, default `switchboard-auth`.
    pub issuer: String,
    /// `aud` claim: `JWT_AUDIENCE`, default `switchboard`.
    pub audience: String,
}

impl TokenSettings {
    /// Reads `JWT_ISSUER` and `JWT_AUDIENCE`.
    pub fn from_env() -> Self {
        Self {
            issuer: var_or("JWT_ISSUER", "switchboard-auth"),
            audience: var_or("JWT_AUDIENCE", "switchboard"),
        }
    }
}

/// Browser origins allowed to call the API with credentials (CORS) and to use the
/// cookie-authenticated endpoints (CSRF): `ALLOWED_ORIGINS`, comma-separated, default
/// `http://localhost:8080,http://127.0.0.1:8080`. Never `*`.
pub fn allowed_origins() -> anyhow::Result<Vec<String>> {
    let origins = list_or(
        "ALLOWED_ORIGINS",
        "http://localhost:8080,http://127.0.0.1:8080",
    );
    if origins.iter().any(|o| o == "*" || o == "null") {
        return Err(anyhow!(
            "ALLOWED_ORIGINS must list origins; '*' and 'null' are refused"
        ));
    }
    Ok(origins)
}

/// Database pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Most connections per pool: `DB_POOL_SIZE`, default 16.
    pub max_size: usize,
    /// How long a request waits for a free connection before answering 503:
    /// `DB_POOL_TIMEOUT_MS`, default 800 ms (plus at most 1 s to open one: a failed write
    /// answers within 2 s).
    pub wait_timeout: Duration,
    /// Per-statement limit applied on every connection: `DB_STATEMENT_TIMEOUT_MS`, default 5000 ms.
    pub statement_timeout: Duration,
}

impl PoolSettings {
    /// Reads `DB_POOL_SIZE`, `DB_POOL_TIMEOUT_MS` and `DB_STATEMENT_TIMEOUT_MS`.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            max_size: parse_or("DB_POOL_SIZE", 16usize)?,
            wait_timeout: Duration::from_millis(parse_or("DB_POOL_TIMEOUT_MS", 800u64)?),
            statement_timeout: Duration::from_millis(parse_or("DB_STATEMENT_TIMEOUT_MS", 5000u64)?),
        })
    }
}

/// Settings of the auth service.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Listen address: `AUTH_BIND`, default `127.0.0.1:8081`.
    pub bind: String,
    /// Internal Prometheus endpoint (`/metrics`), not routed by NGINX: `METRICS_BIND`,
    /// default `127.0.0.1:9181`.
    pub metrics_bind: String,
    /// Primary URL for the `switchboard_auth` role: `AUTH_DATABASE_URL`.
    pub database_url: String,
    pub pool: PoolSettings,
    pub tokens: TokenSettings,
    /// PEM files of Ed25519 private keys (PKCS#8), comma-separated: `AUTH_SIGNING_KEY_FILES`.
    /// The first signs new tokens; all are published in the JWKS (key rotation).
    pub signing_key_files: Vec<String>,
    /// Inline PEM alternative to the files: `AUTH_SIGNING_KEY_PEM` (one key; signs if set).
    pub signing_key_pem: Option<String>,
    /// Access token lifetime: `ACCESS_TOKEN_TTL_SECS`, default 300 (5 minutes).
    pub access_ttl: Duration,
    /// Refresh token (session) absolute lifetime: `REFRESH_TOKEN_TTL_SECS`, default 30 days.
    pub refresh_ttl: Duration,
    /// A session unused this long ends: `REFRESH_TOKEN_IDLE_SECS`, default 14 days.
    pub refresh_idle: Duration,
    /// How long the immediately previous refresh token still answers (with the same
    /// successor) after a rotation, for two tabs refreshing at once:
    /// `REFRESH_GRACE_SECS`, default 10.
    pub refresh_grace: Duration,
    /// Keys that derive each refresh token's successor (HMAC-SHA256), so a grace-window
    /// refresh can hand back the same successor without storing it: `REFRESH_TOKEN_SECRET`,
    /// secrets of at least 32 bytes separated by commas — the first derives new successors,
    /// all are tried for a grace-window refresh, so the key rotates without errors. Required
    /// (see [`crate::platform::secrets`]); never derived from the signing key.
    pub refresh_keys: KeyRing,
    /// Password attempts for one account (or one unknown login name) within the window that
    /// lock it, counted before bcrypt runs, on every endpoint that checks a password:
    /// `LOGIN_MAX_FAILURES`, default 5.
    pub login_max_failures: i32,
    /// `LOGIN_FAILURE_WINDOW_SECS`, default 900.
    pub login_failure_window: Duration,
    /// How long a locked login name answers 429: `LOGIN_LOCKOUT_SECS`, default 300.
    pub login_lockout: Duration,
    /// `Secure` attribute on cookies: `COOKIE_SECURE`, default true. Turn off only for
    /// plain-HTTP local use.
    pub cookie_secure: bool,
    /// bcrypt cost: `BCRYPT_COST`, default 12 (DESIGN.md §2: ≥ 12 in production).
    pub bcrypt_cost: u32,
    /// See [`allowed_origins`].
    pub allowed_origins: Vec<String>,
}

impl AuthConfig {
    /// Reads the auth service's configuration from the environment.
    ///
    /// Errors: a variable that is set but invalid, or a bcrypt cost outside 4..=31.
    pub fn from_env() -> anyhow::Result<Self> {
        let bcrypt_cost = parse_or("BCRYPT_COST", 12u32)?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(anyhow!("BCRYPT_COST must be within 4..=31"));
        }
        Ok(Self {
            bind: var_or("AUTH_BIND", "127.0.0.1:8081"),
            metrics_bind: var_or("METRICS_BIND", "127.0.0.1:9181"),
            database_url: auth_database_url()?,
            pool: PoolSettings::from_env()?,
            tokens: TokenSettings::from_env(),
            signing_key_files: list_or("AUTH_SIGNING_KEY_FILES", ""),
            signing_key_pem: std::env::var("AUTH_SIGNING_KEY_PEM")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            access_ttl: Duration::from_secs(parse_or("ACCESS_TOKEN_TTL_SECS", 300u64)?),
            refresh_ttl: Duration::from_secs(parse_or(
                "REFRESH_TOKEN_TTL_SECS",
                30 * 24 * 3600u64,
            )?),
            refresh_idle: Duration::from_secs(parse_or(
                "REFRESH_TOKEN_IDLE_SECS",
                14 * 24 * 3600u64,
            )?),
            refresh_grace: Duration::from_secs(parse_or("REFRESH_GRACE_SECS", 10u64)?),
            refresh_keys: secrets::load(
                "REFRESH_TOKEN_SECRET",
                "switchboard-dev-refresh-successor-key",
            )?,
            login_max_failures: parse_or("LOGIN_MAX_FAILURES", 5i32)?,
            login_failure_window: Duration::from_secs(parse_or(
                "LOGIN_FAILURE_WINDOW_SECS",
                900u64,
            )?),
            login_lockout: Duration::from_secs(parse_or("LOGIN_LOCKOUT_SECS", 300u64)?),
            cookie_secure: bool_or("COOKIE_SECURE", true)?,
            bcrypt_cost,
            allowed_origins: allowed_origins()?,
        })
    }
}

/// Settings of the messaging service.
#[derive(Clone, Debug)]
pub struct MessagingConfig {
    /// Listen address: `MESSAGING_BIND`, default `127.0.0.1:8082`.
    pub bind: String,
    /// Internal Prometheus endpoint (`/metrics`), not routed by NGINX: `METRICS_BIND`,
    /// default `127.0.0.1:9182`.
    pub metrics_bind: String,
    /// Primary URL for the `switchboard_messaging` role: `MESSAGING_DATABASE_URL`.
    pub primary_url: String,
    /// Replica URLs (hot standbys), comma-separated: `REPLICA_URLS` (or a single
    /// `MESSAGING_REPLICA_URL`). Behind a Kubernetes `-ro` Service this is one URL whose
    /// connections land on different replicas.
    pub replica_urls: Vec<String>,
    /// When a replica counts as lagging, and is skipped: `REPLICA_MAX_LAG_BYTES` behind the
    /// primary's WAL (default 16 MiB) or `REPLICA_MAX_LAG_SECS` behind in replay time
    /// (default 5 s).
    pub replica_max_lag_bytes: u64,
    pub replica_max_lag: Duration,
    /// How often replicas are checked: `REPLICA_CHECK_INTERVAL_MS`, default 1000.
    pub replica_check_interval: Duration,
    /// Keys that sign consistency tokens (HMAC-SHA256), so a client cannot forge a WAL
    /// position that would send its reads to the primary: `CONSISTENCY_TOKEN_SECRET`,
    /// secrets of at least 32 bytes separated by commas — the first signs, all verify; the
    /// same on every instance. Required (see [`crate::platform::secrets`]).
    pub consistency_keys: KeyRing,
    pub pool: PoolSettings,
    pub tokens: TokenSettings,
    /// Where the auth service publishes its public keys: `AUTH_JWKS_URL`.
    pub jwks_url: String,
    /// Shortest gap between two JWKS fetches triggered by unknown `kid`s:
    /// `JWKS_MIN_REFRESH_SECS`, default 10.
    pub jwks_min_refresh: Duration,
    /// See [`allowed_origins`].
    pub allowed_origins: Vec<String>,
    /// Longest wait for the replica to replay a client's consistency token before the read
    /// goes to the primary: `RYW_WAIT_MS`, default 200 ms (DESIGN.md §5).
    pub ryw_wait: Duration,
    /// `Secure` attribute on the `ryw_lsn` cookie: `COOKIE_SECURE`, default true.
    pub cookie_secure: bool,
    /// WebSocket ticket lifetime: `WS_TICKET_TTL_SECS`, default 30.
    pub ws_ticket_ttl: Duration,
    /// Longest message content in Unicode scalar values: `MESSAGE_MAX_CHARS`, default 4000.
    pub message_max_chars: usize,
    /// How long after sending a message its sender may edit it: `MESSAGE_EDIT_WINDOW_SECS`,
    /// default 900 (15 minutes).
    pub edit_window: Duration,
    /// Messages (text and files) one user may send per window, across all instances:
    /// `SEND_RATE_LIMIT`, default 30.
    pub send_rate_limit: i32,
    /// `SEND_RATE_WINDOW_SECS`, default 10.
    pub send_rate_window: Duration,
    /// Largest attachment, in bytes: `ATTACHMENT_MAX_BYTES`, default 10 MiB.
    pub attachment_max_bytes: u64,
    /// Largest avatar image, in bytes: `AVATAR_MAX_BYTES`, default 1 MiB.
    pub avatar_max_bytes: u64,
    /// This instance's name in presence bookkeeping and the `hello` frame: `INSTANCE_ID`,
    /// default `$HOSTNAME` (the pod name in Kubernetes) or `messaging-<pid>`.
    pub instance_id: String,
    /// How long a user with no socket left stays `online` (suppresses flapping on
    /// reconnects): `PRESENCE_GRACE_SECS`, default 5.
    pub presence_grace: Duration,
    /// A `typing` state expires this long after its last refresh: `TYPING_TTL_SECS`,
    /// default 5.
    pub typing_ttl: Duration,
    /// Most events one `resume` replays per conversation before answering `resume.reload`:
    /// `RESUME_MAX_EVENTS`, default 1000.
    pub resume_max_events: i64,
    /// How long every instance remembers a session that ended (from its NOTIFY, and loaded
    /// at start and after a LISTEN reconnect) and refuses its still-valid access tokens:
    /// `SESSION_END_MEMORY_SECS`, default 330 — at least the access token lifetime (300 s)
    /// plus the 30 s verification leeway.
    pub session_end_memory: Duration,
    /// WebSocket tickets one user may get per minute, across instances (429 past it):
    /// `WS_TICKETS_PER_MINUTE`, default 30.
    pub ws_tickets_per_minute: i64,
    /// `resume` frames one user may send per minute, across sockets and instances (an
    /// error frame past it): `WS_RESUMES_PER_MINUTE`, default 10.
    pub ws_resumes_per_minute: u32,
    /// Open sockets one user may hold across instances (429 at the upgrade past it):
    /// `WS_MAX_SOCKETS_PER_USER`, default 32.
    pub ws_max_sockets_per_user: i64,
    /// Most rows one `resume` frame reads across all its conversations; the
    /// conversations past the budget are answered `resume.reload`:
    /// `RESUME_MAX_EVENTS_PER_FRAME`, default 5000.
    pub resume_max_events_per_frame: i64,
    /// Bytes one user may upload (attachments and avatars) per quota window, across
    /// instances: `UPLOAD_QUOTA_WINDOW_BYTES`, default 200 MiB per `UPLOAD_QUOTA_WINDOW_SECS`
    /// (default 3600). Past it: 429 with `Retry-After`.
    pub upload_quota_window_bytes: i64,
    pub upload_quota_window: Duration,
    /// Bytes one user may keep stored in attachments and avatars: `UPLOAD_QUOTA_TOTAL_BYTES`,
    /// default 2 GiB. Past it: 413.
    pub upload_quota_total_bytes: i64,
    /// Client frames a socket may send per second before it is closed (1008):
    /// `WS_MAX_FRAMES_PER_SEC`, default 20.
    pub ws_max_frames_per_sec: u32,
    /// Server ping interval on sockets: `WS_PING_INTERVAL_SECS`, default 20.
    pub ws_ping_interval: Duration,
    /// A socket silent (no frame, no pong) this long is closed: `WS_IDLE_TIMEOUT_SECS`, default 60.
    pub ws_idle_timeout: Duration,
}

impl MessagingConfig {
    /// Reads the messaging service's configuration from the environment.
    ///
    /// Errors: a variable that is set but invalid.
    pub fn from_env() -> anyhow::Result<Self> {
        let cfg = Self {
            bind: var_or("MESSAGING_BIND", "127.0.0.1:8082"),
            metrics_bind: var_or("METRICS_BIND", "127.0.0.1:9182"),
            primary_url: messaging_database_url()?,
            replica_urls: {
                let list = list_or("REPLICA_URLS", "");
                if list.is_empty() {
                    vec![secrets::database_url(
                        "MESSAGING_REPLICA_URL",
                        "postgres://switchboard_messaging:messaging-dev@127.0.0.1:55433/switchboard",
                    )?]
                } else {
                    let dev = secrets::dev_allowed()?;
                    for url in &list {
                        secrets::check_database_url("REPLICA_URLS", url, dev)?;
                    }
                    list
                }
            },
            replica_max_lag_bytes: parse_or("REPLICA_MAX_LAG_BYTES", 16 * 1024 * 1024u64)?,
            replica_max_lag: Duration::from_millis(
                (parse_or("REPLICA_MAX_LAG_SECS", 5.0f64)?.max(0.1) * 1000.0) as u64,
            ),
            replica_check_interval: Duration::from_millis(
                parse_or("REPLICA_CHECK_INTERVAL_MS", 1000u64)?.max(100),
            ),
            consistency_keys: secrets::load(
                "CONSISTENCY_TOKEN_SECRET",
                "switchboard-dev-consistency-token-key",
            )?,
            pool: PoolSettings::from_env()?,
            tokens: TokenSettings::from_env(),
            jwks_url: var_or(
                "AUTH_JWKS_URL",
                "http://127.0.0.1:8081/auth/.well-known/jwks.json",
            ),
            jwks_min_refresh: Duration::from_secs(parse_or("JWKS_MIN_REFRESH_SECS", 10u64)?),
            allowed_origins: allowed_origins()?,
            ryw_wait: Duration::from_millis(parse_or("RYW_WAIT_MS", 200u64)?),
            cookie_secure: bool_or("COOKIE_SECURE", true)?,
            ws_ticket_ttl: Duration::from_secs(parse_or("WS_TICKET_TTL_SECS", 30u64)?),
            message_max_chars: parse_or("MESSAGE_MAX_CHARS", 4000usize)?,
            edit_window: Duration::from_secs(parse_or("MESSAGE_EDIT_WINDOW_SECS", 900u64)?),
            send_rate_limit: parse_or("SEND_RATE_LIMIT", 30i32)?,
            send_rate_window: Duration::from_secs(parse_or("SEND_RATE_WINDOW_SECS", 10u64)?.max(1)),
            attachment_max_bytes: parse_or("ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024u64)?,
            avatar_max_bytes: parse_or("AVATAR_MAX_BYTES", 1024 * 1024u64)?,
            instance_id: var_or(
                "INSTANCE_ID",
                &std::env::var("HOSTNAME")
                    .unwrap_or_else(|_| format!("messaging-{}", std::process::id())),
            ),
            presence_grace: Duration::from_millis(
                (parse_or("PRESENCE_GRACE_SECS", 5.0f64)?.max(0.0) * 1000.0) as u64,
            ),
            typing_ttl: Duration::from_millis(
                (parse_or("TYPING_TTL_SECS", 5.0f64)?.max(0.5) * 1000.0) as u64,
            ),
            resume_max_events: parse_or("RESUME_MAX_EVENTS", 1000i64)?,
            session_end_memory: Duration::from_secs(parse_or("SESSION_END_MEMORY_SECS", 330u64)?),
            ws_tickets_per_minute: parse_or("WS_TICKETS_PER_MINUTE", 30i64)?,
            ws_resumes_per_minute: parse_or("WS_RESUMES_PER_MINUTE", 10u32)?,
            ws_max_sockets_per_user: parse_or("WS_MAX_SOCKETS_PER_USER", 32i64)?,
            resume_max_events_per_frame: parse_or("RESUME_MAX_EVENTS_PER_FRAME", 5000i64)?,
            upload_quota_window_bytes: parse_or("UPLOAD_QUOTA_WINDOW_BYTES", 200 * 1024 * 1024i64)?,
            upload_quota_window: Duration::from_secs(
                parse_or("UPLOAD_QUOTA_WINDOW_SECS", 3600u64)?.max(1),
            ),
            upload_quota_total_bytes: parse_or(
                "UPLOAD_QUOTA_TOTAL_BYTES",
                2 * 1024 * 1024 * 1024i64,
            )?,
            ws_max_frames_per_sec: parse_or("WS_MAX_FRAMES_PER_SEC", 20u32)?,
            ws_ping_interval: Duration::from_secs(parse_or("WS_PING_INTERVAL_SECS", 20u64)?),
            ws_idle_timeout: Duration::from_secs(parse_or("WS_IDLE_TIMEOUT_SECS", 60u64)?),
        };
        if cfg.ws_idle_timeout <= cfg.ws_ping_interval {
            return Err(anyhow!(
                "WS_IDLE_TIMEOUT_SECS must be longer than WS_PING_INTERVAL_SECS"
            ))
            .context("invalid WebSocket heartbeat settings");
        }
        Ok(cfg)
    }
}

/// The auth role's primary URL: `AUTH_DATABASE_URL` (the local stack's under the development
/// switch).
///
/// Errors: see [`secrets::database_url`].
pub fn auth_database_url() -> anyhow::Result<String> {
    secrets::database_url(
        "AUTH_DATABASE_URL",
        "postgres://switchboard_auth:auth-dev@127.0.0.1:55432/switchboard",
    )
}

/// The messaging role's primary URL: `MESSAGING_DATABASE_URL` (the local stack's under the
/// development switch).
///
/// Errors: see [`secrets::database_url`].
pub fn messaging_database_url() -> anyhow::Result<String> {
    secrets::database_url(
        "MESSAGING_DATABASE_URL",
        "postgres://switchboard_messaging:messaging-dev@127.0.0.1:55432/switchboard",
    )
}
