//! The messaging service's settings (`messaging --help`).

use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

use super::{
    database_url, fractional_seconds, milliseconds, seconds, secret, DevSwitch, LogSettings,
    PoolSettings, ServerSettings, TokenSettings, WebSettings, MESSAGING_DEV_URL,
    MESSAGING_REPLICA_DEV_URL,
};
use crate::platform::secrets::{self, KeyRing};

/// Settings of the messaging service. Parse with [`super::parse`], then
/// [`MessagingConfig::resolve`].
#[derive(Parser, Clone, Debug)]
#[command(
    name = "messaging",
    version,
    about = "Switchboard messaging service: conversations, messages, live delivery"
)]
pub struct MessagingConfig {
    /// Listen address of the API and the WebSocket endpoint.
    #[arg(
        long,
        env = "MESSAGING_BIND",
        default_value = "127.0.0.1:8082",
        help_heading = "Network"
    )]
    pub bind: String,
    /// Internal Prometheus endpoint (`/metrics`), not routed by NGINX.
    #[arg(
        long = "metrics-bind",
        env = "METRICS_BIND",
        default_value = "127.0.0.1:9182",
        help_heading = "Network"
    )]
    pub metrics_bind: String,
    #[command(flatten)]
    pub server: ServerSettings,
    /// This instance's name in presence bookkeeping and the `hello` frame (default
    /// `$HOSTNAME`, the pod name in Kubernetes, or `messaging-<pid>`).
    #[arg(
        long = "instance-id",
        env = "INSTANCE_ID",
        value_name = "NAME",
        help_heading = "Network"
    )]
    instance_id_arg: Option<String>,
    /// Set by [`MessagingConfig::resolve`].
    #[arg(skip)]
    pub instance_id: String,

    /// Primary URL for the `switchboard_messaging` role. Required (the local stack's under
    /// the development switch).
    #[arg(long = "database-url", env = "MESSAGING_DATABASE_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true, help_heading = "Database")]
    primary_url_arg: Option<SecretString>,
    /// Set by [`MessagingConfig::resolve`] from `MESSAGING_DATABASE_URL`.
    #[arg(skip)]
    pub primary_url: SecretString,
    /// Replica URLs (hot standbys), comma-separated. Behind a Kubernetes `-ro` Service this
    /// is one URL whose connections land on different replicas.
    #[arg(long = "replica-urls", env = "REPLICA_URLS", value_parser = secret, value_name = "URLS",
          hide_env_values = true, help_heading = "Database")]
    replica_urls_arg: Option<SecretString>,
    /// A single replica URL, when `REPLICA_URLS` is unset.
    #[arg(long = "replica-url", env = "MESSAGING_REPLICA_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true, help_heading = "Database")]
    replica_url_arg: Option<SecretString>,
    /// Set by [`MessagingConfig::resolve`]: at least one.
    #[arg(skip)]
    pub replica_urls: Vec<SecretString>,
    /// Most connections in each replica URL's pool, 1–10 000 (default: `DB_POOL_SIZE`, the
    /// primary's). A replica runs only short reads, each keeping a backend busy on a core
    /// from start to end, so connections past what its cores can run at once only add
    /// backends taking turns: the PostgreSQL wiki's "Number Of Database Connections" puts a
    /// server's throughput peak near `2 × cores + effective spindles` connections in all.
    /// The primary's pool stays larger: its connections also wait on commits and row locks.
    /// Measured with `BENCH_ONLY=history scripts/bench.sh` (two instances, a 2-core host,
    /// ten runs): the replica's CPU per page was 1.59–1.66 × the messaging service's with
    /// pools of 16, 1.38–1.47 × with 8, 1.26–1.35 × with 4, 1.17 × with 2; 4 on the primary
    /// as well cut the closed loop's sends from 2853/s to 2242/s.
    ///
    /// A read with a consistency token holds its connection through its wait for the
    /// replica to replay the token (`RYW_WAIT_MS`), and waits for a free connection only
    /// within that same wait before going to the primary (route reason `replica-busy`); a
    /// read without one waits up to `DB_POOL_TIMEOUT_MS`. The smaller the pool, the likelier
    /// slow or lagging reads send the others to the primary.
    #[arg(long = "db-replica-pool-size", env = "DB_REPLICA_POOL_SIZE", value_name = "N",
          value_parser = super::pool_size, help_heading = "Database pool")]
    pub replica_pool_size: Option<usize>,
    /// A replica further than this many bytes behind the primary's WAL counts as lagging
    /// and is skipped.
    #[arg(long = "replica-max-lag-bytes", env = "REPLICA_MAX_LAG_BYTES", default_value_t = 16 * 1024 * 1024,
          help_heading = "Database")]
    pub replica_max_lag_bytes: u64,
    /// … or this many seconds behind in replay time (at least 0.1).
    #[arg(long = "replica-max-lag-secs", env = "REPLICA_MAX_LAG_SECS", default_value = "5",
          value_parser = fractional_seconds, help_heading = "Database")]
    pub replica_max_lag: Duration,
    /// How often replicas are checked, in milliseconds (at least 100).
    #[arg(long = "replica-check-interval-ms", env = "REPLICA_CHECK_INTERVAL_MS", default_value = "1000",
          value_parser = milliseconds, help_heading = "Database")]
    pub replica_check_interval: Duration,
    /// Longest wait, in milliseconds, for the replica to replay a client's consistency token
    /// before the read goes to the primary (DESIGN.md §5).
    #[arg(long = "ryw-wait-ms", env = "RYW_WAIT_MS", default_value = "200",
          value_parser = milliseconds, help_heading = "Database")]
    pub ryw_wait: Duration,
    /// Keys that sign consistency tokens (HMAC-SHA256, RFC 2104), so a client cannot forge a
    /// WAL position that would send its reads to the primary: secrets of at least 32 bytes
    /// separated by commas — the first signs, all verify; the same on every instance. Required.
    #[arg(long = "consistency-token-secret", env = "CONSISTENCY_TOKEN_SECRET", value_parser = secret, value_name = "SECRETS",
          hide_env_values = true, help_heading = "Database")]
    consistency_secret_arg: Option<SecretString>,
    /// Set by [`MessagingConfig::resolve`] from `CONSISTENCY_TOKEN_SECRET`.
    #[arg(skip)]
    pub consistency_keys: KeyRing,
    #[command(flatten)]
    pub pool: PoolSettings,

    #[command(flatten)]
    pub tokens: TokenSettings,
    /// Where the auth service publishes its public keys (JWKS, RFC 7517).
    #[arg(
        long = "jwks-url",
        env = "AUTH_JWKS_URL",
        default_value = "http://127.0.0.1:8081/auth/.well-known/jwks.json",
        help_heading = "Access tokens"
    )]
    pub jwks_url: String,
    /// Shortest gap, in seconds, between two JWKS fetches triggered by unknown `kid`s.
    #[arg(long = "jwks-min-refresh-secs", env = "JWKS_MIN_REFRESH_SECS", default_value = "10",
          value_parser = seconds, help_heading = "Access tokens")]
    pub jwks_min_refresh: Duration,
    /// Seconds every instance remembers a session that ended (from its NOTIFY, and loaded at
    /// start and after a LISTEN reconnect) and refuses its still-valid access tokens: at
    /// least the access token lifetime (300 s) plus the 30 s verification leeway.
    #[arg(long = "session-end-memory-secs", env = "SESSION_END_MEMORY_SECS", default_value = "330",
          value_parser = seconds, help_heading = "Access tokens")]
    pub session_end_memory: Duration,

    /// Longest message content, in Unicode scalar values.
    #[arg(
        long = "message-max-chars",
        env = "MESSAGE_MAX_CHARS",
        default_value_t = 4000,
        help_heading = "Messages"
    )]
    pub message_max_chars: usize,
    /// Seconds after sending a message during which its sender may edit it.
    #[arg(long = "message-edit-window-secs", env = "MESSAGE_EDIT_WINDOW_SECS", default_value = "900",
          value_parser = seconds, help_heading = "Messages")]
    pub edit_window: Duration,
    /// Messages (text and files) one user may send per window, across all instances.
    #[arg(
        long = "send-rate-limit",
        env = "SEND_RATE_LIMIT",
        default_value_t = 30,
        help_heading = "Messages"
    )]
    pub send_rate_limit: i32,
    /// That window, in seconds (at least 1).
    #[arg(long = "send-rate-window-secs", env = "SEND_RATE_WINDOW_SECS", default_value = "10",
          value_parser = seconds, help_heading = "Messages")]
    pub send_rate_window: Duration,
    /// Who may mention a whole group with `@all`: `false`, its admins only; `true`, every
    /// member.
    #[arg(long = "mention-all-members", env = "MENTION_ALL_MEMBERS", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(),
          help_heading = "Messages")]
    pub mention_all_members: bool,
    /// How often each instance's notification worker looks for queued messages, in
    /// milliseconds (a mention reaches the feed within about this long).
    #[arg(long = "notify-poll-interval-ms", env = "NOTIFY_POLL_INTERVAL_MS", default_value = "200",
          value_parser = milliseconds, help_heading = "Messages")]
    pub notify_poll_interval: Duration,

    /// Sends an instance holds at most (queued for group commit or being appended): the
    /// bound on their memory and the ceiling of admission control's limit, where the limit
    /// starts. Past the limit a send answers 503 with `Retry-After` at once. 64 rather than
    /// more: a sudden overload is served at the starting limit until waits have stood past
    /// the target for 100 ms and the cuts (at most halving, once per window) bring it down,
    /// so a high start is a slow first second. Measured at 2 × the sustainable rate on the
    /// same delay rule: the first second's accepted p99 258 ms from 512 and 114 ms from 128
    /// (short runs, 2026-12-02); 198 ms from 128 and 101 ms from 64 (full-mode overload,
    /// fresh stacks, no host steal, 2026-12-03), where 64 also accepted 17 % more sends
    /// (59 999 against 51 231 in 30 s) and the whole phase's accepted p99 fell from 113 to
    /// 104 ms. 64 held at once is still ~56 ms of one instance's share of the most the two
    /// appended in that run (2266 sends/s, closed loop).
    #[arg(
        long = "send-queue-capacity",
        env = "SEND_QUEUE_CAPACITY",
        default_value_t = 64,
        help_heading = "Messages"
    )]
    pub send_queue_capacity: usize,
    /// The queueing delay admission control keeps sends to, in milliseconds: how long a
    /// batch's oldest send had waited, from the edge (NGINX's `X-Request-Start`), when its
    /// batch was taken, less the commit of the batch before it (a WAL flush is the disk's
    /// time, not the queue's; the statement before it, which grows with the sends in the
    /// batch, counts). Once batches have waited longer for
    /// 100 ms, the number of sends the instance accepts at once is cut (by target ÷ wait,
    /// between 0.5 and 0.7); batches within it grow it again (AIMD, RFC 5681 §3.1, on
    /// CoDel's sojourn time, RFC 8289 §3; `messaging::admission`).
    #[arg(
        long = "send-queue-max-wait-ms",
        env = "SEND_QUEUE_MAX_WAIT_MS",
        default_value = "20",
        value_parser = milliseconds,
        help_heading = "Messages"
    )]
    pub send_queue_max_wait: Duration,
    /// Sends appended together in one transaction at most.
    #[arg(
        long = "send-batch-max",
        env = "SEND_BATCH_MAX",
        default_value_t = 128,
        help_heading = "Messages"
    )]
    pub send_batch_max: usize,
    /// Batches in flight at once per instance (each on its own primary connection). One
    /// is fastest on the benchmark machine: a second writer halves each batch and its
    /// backend competes for the same cores (docs/benchmarks/report.md).
    #[arg(
        long = "send-writers",
        env = "SEND_WRITERS",
        default_value_t = 1,
        help_heading = "Messages"
    )]
    pub send_writers: usize,

    /// Largest attachment, in bytes.
    #[arg(long = "attachment-max-bytes", env = "ATTACHMENT_MAX_BYTES", default_value_t = 10 * 1024 * 1024,
          help_heading = "Files")]
    pub attachment_max_bytes: u64,
    /// Largest avatar image, in bytes.
    #[arg(long = "avatar-max-bytes", env = "AVATAR_MAX_BYTES", default_value_t = 1024 * 1024,
          help_heading = "Files")]
    pub avatar_max_bytes: u64,
    /// Bytes one user may upload (attachments and avatars) per quota window, across
    /// instances (429 with `Retry-After` past it).
    #[arg(long = "upload-quota-window-bytes", env = "UPLOAD_QUOTA_WINDOW_BYTES",
          default_value_t = 200 * 1024 * 1024, help_heading = "Files")]
    pub upload_quota_window_bytes: i64,
    /// That window, in seconds (at least 1).
    #[arg(long = "upload-quota-window-secs", env = "UPLOAD_QUOTA_WINDOW_SECS", default_value = "3600",
          value_parser = seconds, help_heading = "Files")]
    pub upload_quota_window: Duration,
    /// Bytes one user may keep stored in attachments and avatars (413 past it).
    #[arg(long = "upload-quota-total-bytes", env = "UPLOAD_QUOTA_TOTAL_BYTES",
          default_value_t = 2 * 1024 * 1024 * 1024, help_heading = "Files")]
    pub upload_quota_total_bytes: i64,

    /// WebSocket ticket lifetime, in seconds.
    #[arg(long = "ws-ticket-ttl-secs", env = "WS_TICKET_TTL_SECS", default_value = "30",
          value_parser = seconds, help_heading = "Live delivery")]
    pub ws_ticket_ttl: Duration,
    /// WebSocket tickets one user may get per minute, across instances (429 past it).
    #[arg(
        long = "ws-tickets-per-minute",
        env = "WS_TICKETS_PER_MINUTE",
        default_value_t = 30,
        help_heading = "Live delivery"
    )]
    pub ws_tickets_per_minute: i64,
    /// Open sockets one user may hold across instances (429 at the upgrade past it).
    #[arg(
        long = "ws-max-sockets-per-user",
        env = "WS_MAX_SOCKETS_PER_USER",
        default_value_t = 32,
        help_heading = "Live delivery"
    )]
    pub ws_max_sockets_per_user: i64,
    /// Client frames a socket may send per second before it is closed (1008).
    #[arg(
        long = "ws-max-frames-per-sec",
        env = "WS_MAX_FRAMES_PER_SEC",
        default_value_t = 20,
        help_heading = "Live delivery"
    )]
    pub ws_max_frames_per_sec: u32,
    /// Server ping interval on sockets, in seconds.
    #[arg(long = "ws-ping-interval-secs", env = "WS_PING_INTERVAL_SECS", default_value = "20",
          value_parser = seconds, help_heading = "Live delivery")]
    pub ws_ping_interval: Duration,
    /// A socket silent (no frame, no pong) this many seconds is closed; longer than the ping
    /// interval.
    #[arg(long = "ws-idle-timeout-secs", env = "WS_IDLE_TIMEOUT_SECS", default_value = "60",
          value_parser = seconds, help_heading = "Live delivery")]
    pub ws_idle_timeout: Duration,
    /// Most events one `resume` replays per conversation before answering `resume.reload`.
    #[arg(
        long = "resume-max-events",
        env = "RESUME_MAX_EVENTS",
        default_value_t = 1000,
        help_heading = "Live delivery"
    )]
    pub resume_max_events: i64,
    /// Most rows one `resume` frame reads across all its conversations; the conversations
    /// past the budget are answered `resume.reload`.
    #[arg(
        long = "resume-max-events-per-frame",
        env = "RESUME_MAX_EVENTS_PER_FRAME",
        default_value_t = 5000,
        help_heading = "Live delivery"
    )]
    pub resume_max_events_per_frame: i64,
    /// `resume` frames one user may send per minute, across sockets and instances (an error
    /// frame past it).
    #[arg(
        long = "ws-resumes-per-minute",
        env = "WS_RESUMES_PER_MINUTE",
        default_value_t = 10,
        help_heading = "Live delivery"
    )]
    pub ws_resumes_per_minute: u32,
    /// Seconds a user with no socket left stays `online` (suppresses flapping on reconnects).
    #[arg(long = "presence-grace-secs", env = "PRESENCE_GRACE_SECS", default_value = "5",
          value_parser = fractional_seconds, help_heading = "Live delivery")]
    pub presence_grace: Duration,
    /// A `typing` state expires this many seconds after its last refresh (at least 0.5).
    #[arg(long = "typing-ttl-secs", env = "TYPING_TTL_SECS", default_value = "5",
          value_parser = fractional_seconds, help_heading = "Live delivery")]
    pub typing_ttl: Duration,

    /// How long a message may stay unread, with its recipient away, before they are mailed a
    /// digest of the conversation's unread messages (one per conversation window), in seconds.
    #[arg(long = "email-digest-delay-secs", env = "EMAIL_DIGEST_DELAY_SECS", default_value = "900",
          value_parser = seconds, help_heading = "Messages")]
    pub email_digest_delay: Duration,

    #[command(flatten)]
    pub push: super::PushSettings,
    #[command(flatten)]
    pub mail: super::MailSettings,
    #[command(flatten)]
    pub web: WebSettings,
    #[command(flatten)]
    pub dev: DevSwitch,
    #[command(flatten)]
    pub logs: LogSettings,
}

impl MessagingConfig {
    /// The settings of each replica URL's pools: the primary's ([`Self::pool`]) with
    /// `DB_REPLICA_POOL_SIZE` connections when it is set.
    pub fn replica_pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_size: self.replica_pool_size.unwrap_or(self.pool.max_size),
            ..self.pool.clone()
        }
    }

    /// Checks the parsed settings, applies the floors named above and loads the secrets
    /// (call after telemetry starts, so the development switch's warnings are logged).
    ///
    /// Errors: a missing, short or placeholder secret or database password without the
    /// development switch; `*` among the allowed origins; an idle timeout not longer than
    /// the ping interval.
    pub fn resolve(mut self) -> anyhow::Result<Self> {
        let dev = self.dev.allow_insecure_dev_secrets;
        self.primary_url = database_url(
            "MESSAGING_DATABASE_URL",
            self.primary_url_arg.take().as_ref(),
            MESSAGING_DEV_URL,
            dev,
        )?;
        self.replica_urls = match self.replica_urls_arg.take() {
            Some(list) => list
                .expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| {
                    secrets::check_database_url("REPLICA_URLS", u, dev)?;
                    Ok(SecretString::from(u))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        if self.replica_urls.is_empty() {
            self.replica_urls.push(database_url(
                "MESSAGING_REPLICA_URL",
                self.replica_url_arg.take().as_ref(),
                MESSAGING_REPLICA_DEV_URL,
                dev,
            )?);
        }
        self.consistency_keys = secrets::load(
            "CONSISTENCY_TOKEN_SECRET",
            self.consistency_secret_arg.take().as_ref(),
            "switchboard-dev-consistency-token-key",
            dev,
        )?;
        self.web.check()?;
        self.instance_id = self.instance_id_arg.take().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| format!("messaging-{}", std::process::id()))
        });
        self.replica_max_lag = self.replica_max_lag.max(Duration::from_millis(100));
        self.replica_check_interval = self.replica_check_interval.max(Duration::from_millis(100));
        self.send_rate_window = self.send_rate_window.max(Duration::from_secs(1));
        self.upload_quota_window = self.upload_quota_window.max(Duration::from_secs(1));
        self.typing_ttl = self.typing_ttl.max(Duration::from_millis(500));
        if self.ws_idle_timeout <= self.ws_ping_interval {
            return Err(anyhow!(
                "WS_IDLE_TIMEOUT_SECS must be longer than WS_PING_INTERVAL_SECS"
            ));
        }
        if self.mail.smtp_url.is_none() && dev {
            self.mail.smtp_url = Some(SecretString::from(super::SMTP_DEV_URL));
        }
        Ok(self)
    }
}
