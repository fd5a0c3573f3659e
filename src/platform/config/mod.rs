//! Configuration (12-factor, DESIGN.md §6): every setting is a command-line flag and an
//! environment variable (`#[arg(long, env)]`), grouped by concern, with defaults that run the
//! local stack of `scripts/run.sh`. `auth --help`, `messaging --help` and `migrate --help`
//! list every setting with its variable; `scripts/validate_deploy.py` reads those lists to
//! check the deployment files.
//!
//! Every setting has a default except the secrets and the database URLs, which are required
//! unless the development switch is set ([`crate::platform::secrets`]). A value that is set
//! but does not parse stops the start with a message naming it; an empty variable counts as
//! unset. Secrets (database URLs with their passwords, key rings, the signing key) are held
//! as [`SecretString`]: `Debug` redacts them and `--help` never prints their values.

/// The auth service's settings (named for the service, not the `auth` domain module).
mod auth_service;
mod mail;
/// The messaging service's settings.
mod messaging_service;
mod push;

use std::{ffi::OsString, time::Duration};

use anyhow::anyhow;
use clap::{builder::BoolishValueParser, ArgAction, Args, Parser};
use secrecy::{ExposeSecret, SecretString};

pub use self::{
    auth_service::AuthConfig,
    mail::{MailSettings, SMTP_DEV_URL},
    messaging_service::MessagingConfig,
    push::PushSettings,
};
use crate::platform::secrets;

/// Parses a configuration from the process's arguments and environment; `--help` and
/// `--version` print and exit, and so does a value that does not parse (exit code 2, the
/// message naming the flag and variable).
pub fn parse<C: Parser>() -> C {
    parse_from(std::env::args_os())
}

/// [`parse`] from the given arguments (the first is the program name) and the environment.
pub fn parse_from<C: Parser, I: IntoIterator<Item = T>, T: Into<OsString> + Clone>(args: I) -> C {
    match try_parse_from(args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    }
}

/// [`parse_from`], returning the error instead of exiting (tests, in-process services).
///
/// Errors: an unknown flag, or a flag or variable whose value does not parse.
pub fn try_parse_from<C: Parser, I: IntoIterator<Item = T>, T: Into<OsString> + Clone>(
    args: I,
) -> Result<C, clap::Error> {
    // An empty variable counts as unset (compose files write `VAR: ${VAR:-}`).
    let cmd = C::command().mut_args(|a| {
        let blank = a
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| v.to_string_lossy().trim().is_empty());
        if blank {
            a.env(None)
        } else {
            a
        }
    });
    let matches = cmd.try_get_matches_from(args)?;
    C::from_arg_matches(&matches)
}

/// Access-token validation settings shared by both services (DESIGN.md §2).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Access tokens")]
pub struct TokenSettings {
    /// `iss` claim every access token carries (RFC 7519 §4.1.1).
    #[arg(
        long = "jwt-issuer",
        env = "JWT_ISSUER",
        default_value = "switchboard-auth"
    )]
    pub issuer: String,
    /// `aud` claim every access token carries (RFC 7519 §4.1.3).
    #[arg(
        long = "jwt-audience",
        env = "JWT_AUDIENCE",
        default_value = "switchboard"
    )]
    pub audience: String,
}

/// Database pool settings (deadpool-postgres).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Database pool")]
pub struct PoolSettings {
    /// Most connections per pool, 1–10 000 (a pool of none would refuse every request).
    #[arg(long = "db-pool-size", env = "DB_POOL_SIZE", default_value = "16", value_parser = pool_size)]
    pub max_size: usize,
    /// Milliseconds a request waits for a free connection before answering 503 (plus at most
    /// 1 s to open one: a failed write answers within 2 s).
    #[arg(long = "db-pool-timeout-ms", env = "DB_POOL_TIMEOUT_MS", default_value = "800",
          value_parser = milliseconds)]
    pub wait_timeout: Duration,
    /// Per-statement limit on every connection, in milliseconds (`statement_timeout`,
    /// PostgreSQL docs §20.11.1).
    #[arg(long = "db-statement-timeout-ms", env = "DB_STATEMENT_TIMEOUT_MS", default_value = "5000",
          value_parser = statement_timeout)]
    pub statement_timeout: Duration,
}

/// HTTP server settings shared by both services.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Network")]
pub struct ServerSettings {
    /// HTTP worker threads, 1–512 (actix-server's ceiling), each a single-threaded runtime
    /// serving its own connections (default: the cores this process may use, cgroup quota
    /// included). Several instances on one host should share its cores between them
    /// (`scripts/common.sh` gives each of `MESSAGING_INSTANCES` instances its share): a
    /// database connection's I/O runs on the worker that opened it, so every statement of a
    /// request served by another worker crosses threads twice, and more workers than cores
    /// make those crossings context switches. Measured with `BENCH_ONLY=history` and
    /// `BENCH_ONLY=send scripts/bench.sh`, two instances on 2 cores, alternating runs: one
    /// worker each used 10–13 % less of the service's CPU per page and per send than two.
    #[arg(long = "http-workers", env = "HTTP_WORKERS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub http_workers: Option<u16>,
}

/// Browser-facing settings shared by both services.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Browsers")]
pub struct WebSettings {
    /// Browser origins allowed to call the API with credentials (CORS) and to use the
    /// cookie-authenticated endpoints (CSRF), comma-separated. Never `*` or `null`.
    #[arg(
        long = "allowed-origins",
        env = "ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:8080,http://127.0.0.1:8080"
    )]
    pub allowed_origins: Vec<String>,
    /// `Secure` attribute on cookies. Turn off only for plain-HTTP local use.
    #[arg(long = "cookie-secure", env = "COOKIE_SECURE", default_value = "true",
          action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub cookie_secure: bool,
}

impl WebSettings {
    fn check(&mut self) -> anyhow::Result<()> {
        self.allowed_origins = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if self.allowed_origins.iter().any(|o| o == "*" || o == "null") {
            return Err(anyhow!(
                "ALLOWED_ORIGINS must list origins; '*' and 'null' are refused"
            ));
        }
        Ok(())
    }
}

/// Logging settings, read before anything else is ([`crate::platform::telemetry::init`]).
/// The OpenTelemetry SDK reads the standard `OTEL_*` variables itself.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Logs")]
pub struct LogSettings {
    /// `json` writes one JSON object per line; anything else the human format.
    #[arg(long = "log-format", env = "LOG_FORMAT", default_value = "pretty")]
    pub format: String,
    /// Log filter (tracing-subscriber `EnvFilter` directives).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub filter: String,
}

/// The development switch: start with development secrets (built-in defaults, short or
/// placeholder values), logging a warning. Never set in production.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Secrets")]
pub struct DevSwitch {
    /// Allow insecure development secrets (see `crate::platform::secrets`).
    #[arg(long = "allow-insecure-dev-secrets", env = secrets::DEV_SWITCH, default_value = "false",
          action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub allow_insecure_dev_secrets: bool,
}

/// Settings of the one-shot `migrate` binary: both roles' primary URLs.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "migrate",
    version,
    about = "Applies both schemas' migrations, then exits"
)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub databases: Databases,
    #[command(flatten)]
    pub dev: DevSwitch,
    #[command(flatten)]
    pub logs: LogSettings,
}

/// Both roles' primary URLs (the `migrate` binary applies each schema as its own role).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Database")]
pub struct Databases {
    /// Primary URL for the `switchboard_auth` role (postgres://role:password@host:port/db).
    #[arg(long = "auth-database-url", env = "AUTH_DATABASE_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true)]
    pub auth: Option<SecretString>,
    /// Primary URL for the `switchboard_messaging` role.
    #[arg(long = "messaging-database-url", env = "MESSAGING_DATABASE_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true)]
    pub messaging: Option<SecretString>,
}

impl MigrateConfig {
    /// Both URLs, checked (the local stack's under the development switch).
    ///
    /// Errors: see [`database_url`].
    pub fn urls(&self) -> anyhow::Result<(SecretString, SecretString)> {
        let dev = self.dev.allow_insecure_dev_secrets;
        Ok((
            database_url(
                "AUTH_DATABASE_URL",
                self.databases.auth.as_ref(),
                AUTH_DEV_URL,
                dev,
            )?,
            database_url(
                "MESSAGING_DATABASE_URL",
                self.databases.messaging.as_ref(),
                MESSAGING_DEV_URL,
                dev,
            )?,
        ))
    }
}

/// The local stack's auth role URL (`scripts/run.sh`), used only under the development switch:
/// TLS verified against the local CA (`scripts/local-ca.sh`, relative to the repository root),
/// as the local PostgreSQL admits the service roles only over TLS.
const AUTH_DEV_URL: &str = "postgres://switchboard_auth:auth-dev@127.0.0.1:55432/switchboard?sslmode=verify-full&sslrootcert=.data/tls/ca.pem";
/// The local stack's messaging role URL on the primary.
const MESSAGING_DEV_URL: &str = "postgres://switchboard_messaging:messaging-dev@127.0.0.1:55432/switchboard?sslmode=verify-full&sslrootcert=.data/tls/ca.pem";
/// The local stack's messaging role URL on its replica.
const MESSAGING_REPLICA_DEV_URL: &str = "postgres://switchboard_messaging:messaging-dev@127.0.0.1:55433/switchboard?sslmode=verify-full&sslrootcert=.data/tls/ca.pem";

/// A database URL from variable `name`'s value: `dev_default` only under the development
/// switch, and never with a placeholder password without it.
///
/// Errors: unset without the switch; an unparsable URL; a placeholder password without it.
fn database_url(
    name: &str,
    value: Option<&SecretString>,
    dev_default: &str,
    dev: bool,
) -> anyhow::Result<SecretString> {
    let url = match value {
        Some(v) => v.clone(),
        None if dev => SecretString::from(dev_default),
        None => {
            return Err(anyhow!(
                "{name} is required (postgres://role:password@host:port/database); \
                 {}=true uses the local development database",
                secrets::DEV_SWITCH
            ))
        }
    };
    secrets::check_database_url(name, url.expose_secret(), dev)?;
    Ok(url)
}

/// Value parser for a secret: kept out of `Debug` output.
fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.trim()))
}

/// The longest duration any setting takes: 100 years (3 153 600 000 s). Many settings become
/// SQL intervals added to `now()` (a digest's due time, a session's expiry); an interval
/// counts microseconds in 64 bits (PostgreSQL docs §8.5), so one past about 292 000 years
/// fails at run time, in every statement that uses the setting — a typo in one setting would
/// stop that work for good. Refused at start instead.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest statement timeout: PostgreSQL's `statement_timeout` is an `int` of
/// milliseconds (docs §20.11.1), and each connection also sets
/// `idle_in_transaction_session_timeout` to twice it, so twice this must fit in
/// 2 147 483 647: about 12.4 days. Past it every connection would fail at run time.
const LONGEST_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64 / 2);

/// `d` if it is at most `max`; the error counts `max` in the setting's own unit (`unit` long,
/// named `name`: one second, `"seconds"`).
fn at_most(d: Duration, max: Duration, (unit, name): (Duration, &str)) -> Result<Duration, String> {
    if d <= max {
        return Ok(d);
    }
    Err(format!(
        "at most {} {name}",
        max.as_nanos() / unit.as_nanos()
    ))
}

/// The units settings are given in, for [`at_most`]'s errors.
const SECONDS: (Duration, &str) = (Duration::from_secs(1), "seconds");
const MILLISECONDS: (Duration, &str) = (Duration::from_millis(1), "milliseconds");

/// Value parser: whole seconds, at most [`LONGEST`].
fn seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("{e} (whole seconds)"))
        .and_then(|d| at_most(d, LONGEST, SECONDS))
}

/// Value parser: whole milliseconds, at most [`LONGEST`].
fn milliseconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{e} (whole milliseconds)"))
        .and_then(|d| at_most(d, LONGEST, MILLISECONDS))
}

/// Value parser: a pool's most connections, 1–10 000 (`DB_POOL_SIZE`,
/// `DB_REPLICA_POOL_SIZE`).
pub(crate) fn pool_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=10_000) => Ok(n),
        Ok(_) => Err("1 to 10000 connections".into()),
        Err(e) => Err(format!("{e} (a whole number of connections)")),
    }
}

/// Value parser: a statement timeout in whole milliseconds, at most
/// [`LONGEST_STATEMENT_TIMEOUT`].
fn statement_timeout(s: &str) -> Result<Duration, String> {
    milliseconds(s).and_then(|d| at_most(d, LONGEST_STATEMENT_TIMEOUT, MILLISECONDS))
}

/// Value parser: seconds with a fraction (`0.5`), finite, not negative, at most [`LONGEST`].
fn fractional_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e} (seconds)"))?;
    Duration::try_from_secs_f64(v)
        .map_err(|e| format!("{e} (seconds, not negative)"))
        .and_then(|d| at_most(d, LONGEST, SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help_of<C: clap::CommandFactory>() -> String {
        C::command().render_long_help().to_string()
    }

    /// The message parsing `args` fails with (empty if it parses).
    fn error_of<C: Parser>(args: &[&str]) -> String {
        try_parse_from::<C, _, _>(args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn help_lists_every_variable() {
        let help = help_of::<AuthConfig>();
        for var in [
            "AUTH_DATABASE_URL",
            "REFRESH_TOKEN_SECRET",
            "BCRYPT_COST",
            "RUST_LOG",
        ] {
            assert!(
                help.contains(&format!("env: {var}")),
                "{var} missing:\n{help}"
            );
        }
        let help = help_of::<MessagingConfig>();
        for var in [
            "REPLICA_URLS",
            "CONSISTENCY_TOKEN_SECRET",
            "WS_TICKET_TTL_SECS",
        ] {
            assert!(
                help.contains(&format!("env: {var}")),
                "{var} missing:\n{help}"
            );
        }
    }

    #[test]
    fn values_parse_with_units_and_bad_ones_name_the_flag() {
        assert_eq!(fractional_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(fractional_seconds("-1").is_err());
        assert_eq!(milliseconds(" 800 "), Ok(Duration::from_millis(800)));
        let e = error_of::<AuthConfig>(&["auth", "--bcrypt-cost", "x"]);
        assert!(e.contains("--bcrypt-cost"), "{e}");
        // Outside actix-server's 1–512 workers: a message naming the flag, not a panic at
        // start.
        for bad in ["0", "513"] {
            let e = error_of::<MessagingConfig>(&["messaging", "--http-workers", bad]);
            assert!(e.contains("--http-workers"), "{bad}: {e}");
        }
        let cfg =
            try_parse_from::<AuthConfig, _, _>(["auth", "--http-workers", "3"]).expect("parses");
        assert_eq!(cfg.server.http_workers, Some(3));
    }

    /// Each replica URL's pool is the primary's size unless `DB_REPLICA_POOL_SIZE` sets its
    /// own; a pool of none would refuse every request, so 0 is refused at start for both.
    /// Parsed with the environment switched off, so a variable set where the tests run
    /// cannot stand in for the fallback.
    #[test]
    fn replica_pools_take_their_own_size_or_the_primarys() {
        use clap::{CommandFactory, FromArgMatches};
        let parse = |args: &[&str]| {
            let matches = MessagingConfig::command()
                .mut_args(|a| a.env(None))
                .try_get_matches_from(args)?;
            MessagingConfig::from_arg_matches(&matches)
        };
        let cfg = parse(&["messaging", "--db-pool-size", "12"]).expect("parses");
        assert_eq!(cfg.replica_pool_size, None);
        assert_eq!(cfg.replica_pool_settings().max_size, 12);
        let cfg = parse(&[
            "messaging",
            "--db-pool-size",
            "12",
            "--db-replica-pool-size",
            "4",
        ])
        .expect("parses");
        let replica = cfg.replica_pool_settings();
        assert_eq!((replica.max_size, cfg.pool.max_size), (4, 12));
        assert_eq!(replica.wait_timeout, cfg.pool.wait_timeout);
        for flag in ["--db-replica-pool-size", "--db-pool-size"] {
            for bad in ["0", "10001", "x"] {
                let e = parse(&["messaging", flag, bad])
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(e.contains(flag), "{flag} {bad}: {e}");
            }
        }
    }

    /// A duration the database cannot add to `now()` (an interval past about 292 000 years
    /// overflows, PostgreSQL docs §8.5) would fail every statement that uses it, at run time:
    /// a digest delay of 10^13 s stopped every notification pass. Refused at start instead.
    #[test]
    fn durations_past_a_century_are_refused_at_start() {
        assert_eq!(
            seconds("3153600000"),
            Ok(Duration::from_secs(3_153_600_000))
        );
        assert!(seconds("3153600001").is_err());
        assert!(milliseconds("3153600000001").is_err());
        assert!(fractional_seconds("3153600000.5").is_err());
        let e = error_of::<MessagingConfig>(&[
            "messaging",
            "--email-digest-delay-secs",
            "10000000000000",
        ]);
        assert!(e.contains("--email-digest-delay-secs"), "{e}");
        // The statement timeout, and twice it, must fit PostgreSQL's int of milliseconds.
        assert!(statement_timeout("1073741823").is_ok());
        let e =
            error_of::<MessagingConfig>(&["messaging", "--db-statement-timeout-ms", "1073741824"]);
        assert!(
            e.contains("--db-statement-timeout-ms") && e.contains("1073741823 milliseconds"),
            "{e}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg: MigrateConfig = try_parse_from([
            "migrate",
            "--auth-database-url",
            "postgres://a:hunter2-hunter2@h/db",
        ])
        .expect("parses");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
