//! The auth service's settings (`auth --help`).

use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;

use super::{
    database_url, seconds, secret, DevSwitch, LogSettings, MailSettings, PoolSettings,
    ServerSettings, TokenSettings, WebSettings, AUTH_DEV_URL, SMTP_DEV_URL,
};
use crate::platform::secrets::{self, KeyRing};

/// Settings of the auth service. Parse with [`super::parse`], then [`AuthConfig::resolve`].
#[derive(Parser, Clone, Debug)]
#[command(
    name = "auth",
    version,
    about = "Switchboard auth service: accounts, sessions, tokens"
)]
pub struct AuthConfig {
    /// Listen address of the API.
    #[arg(
        long,
        env = "AUTH_BIND",
        default_value = "127.0.0.1:8081",
        help_heading = "Network"
    )]
    pub bind: String,
    /// Internal Prometheus endpoint (`/metrics`), not routed by NGINX.
    #[arg(
        long = "metrics-bind",
        env = "METRICS_BIND",
        default_value = "127.0.0.1:9181",
        help_heading = "Network"
    )]
    pub metrics_bind: String,
    #[command(flatten)]
    pub server: ServerSettings,

    /// Primary URL for the `switchboard_auth` role (postgres://role:password@host:port/db).
    /// Required (the local stack's under the development switch).
    #[arg(long = "database-url", env = "AUTH_DATABASE_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true, help_heading = "Database")]
    database_url_arg: Option<SecretString>,
    /// Set by [`AuthConfig::resolve`] from `AUTH_DATABASE_URL`.
    #[arg(skip)]
    pub database_url: SecretString,
    #[command(flatten)]
    pub pool: PoolSettings,

    #[command(flatten)]
    pub tokens: TokenSettings,
    /// PEM files of Ed25519 private keys (PKCS#8), comma-separated. The first signs new
    /// tokens; all are published in the JWKS (key rotation).
    #[arg(
        long = "signing-key-files",
        env = "AUTH_SIGNING_KEY_FILES",
        value_delimiter = ',',
        help_heading = "Access tokens"
    )]
    pub signing_key_files: Vec<String>,
    /// Inline PEM alternative to the files (one key; signs if set).
    #[arg(long = "signing-key-pem", env = "AUTH_SIGNING_KEY_PEM", value_parser = secret, value_name = "PEM",
          hide_env_values = true, help_heading = "Access tokens")]
    pub signing_key_pem: Option<SecretString>,
    /// Access token lifetime, in seconds.
    #[arg(long = "access-token-ttl-secs", env = "ACCESS_TOKEN_TTL_SECS", default_value = "300",
          value_parser = seconds, help_heading = "Access tokens")]
    pub access_ttl: Duration,

    /// Refresh token (session) absolute lifetime, in seconds (default 30 days).
    #[arg(long = "refresh-token-ttl-secs", env = "REFRESH_TOKEN_TTL_SECS", default_value = "2592000",
          value_parser = seconds, help_heading = "Sessions")]
    pub refresh_ttl: Duration,
    /// A session unused this many seconds ends (default 14 days).
    #[arg(long = "refresh-token-idle-secs", env = "REFRESH_TOKEN_IDLE_SECS", default_value = "1209600",
          value_parser = seconds, help_heading = "Sessions")]
    pub refresh_idle: Duration,
    /// Seconds the immediately previous refresh token still answers (with the same successor)
    /// after a rotation, for two tabs refreshing at once.
    #[arg(long = "refresh-grace-secs", env = "REFRESH_GRACE_SECS", default_value = "10",
          value_parser = seconds, help_heading = "Sessions")]
    pub refresh_grace: Duration,
    /// Keys that derive each refresh token's successor (HMAC-SHA256, RFC 2104), so a
    /// grace-window refresh hands back the same successor without storing it: secrets of at
    /// least 32 bytes separated by commas; the first derives, all are tried (rotation).
    /// Required; never derived from the signing key.
    #[arg(long = "refresh-token-secret", env = "REFRESH_TOKEN_SECRET", value_parser = secret, value_name = "SECRETS",
          hide_env_values = true, help_heading = "Sessions")]
    refresh_secret_arg: Option<SecretString>,
    /// Set by [`AuthConfig::resolve`] from `REFRESH_TOKEN_SECRET`.
    #[arg(skip)]
    pub refresh_keys: KeyRing,

    /// Password attempts for one account (or one unknown login name) within the window that
    /// lock it, counted before bcrypt runs, on every endpoint that checks a password.
    #[arg(
        long = "login-max-failures",
        env = "LOGIN_MAX_FAILURES",
        default_value_t = 5,
        help_heading = "Passwords"
    )]
    pub login_max_failures: i32,
    /// The window those attempts count in, in seconds.
    #[arg(long = "login-failure-window-secs", env = "LOGIN_FAILURE_WINDOW_SECS", default_value = "900",
          value_parser = seconds, help_heading = "Passwords")]
    pub login_failure_window: Duration,
    /// Seconds a locked login name answers 429.
    #[arg(long = "login-lockout-secs", env = "LOGIN_LOCKOUT_SECS", default_value = "300",
          value_parser = seconds, help_heading = "Passwords")]
    pub login_lockout: Duration,
    /// bcrypt cost, 4..=31 (DESIGN.md §2: ≥ 12 in production).
    #[arg(long = "bcrypt-cost", env = "BCRYPT_COST", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(4..=31), help_heading = "Passwords")]
    pub bcrypt_cost: u32,

    /// How long an email verification link stays valid, in seconds (default a day).
    #[arg(long = "email-verify-ttl-secs", env = "EMAIL_VERIFY_TTL_SECS", default_value = "86400",
          value_parser = seconds, help_heading = "Account recovery")]
    pub email_verify_ttl: Duration,
    /// How long a password reset link stays valid, in seconds (30 minutes).
    #[arg(long = "password-reset-ttl-secs", env = "PASSWORD_RESET_TTL_SECS", default_value = "1800",
          value_parser = seconds, help_heading = "Account recovery")]
    pub password_reset_ttl: Duration,
    /// Reset or verification mails one account is sent per hour at most; past it the answer
    /// is the same and no mail goes out.
    #[arg(
        long = "account-mail-per-hour",
        env = "ACCOUNT_MAIL_PER_HOUR",
        default_value_t = 5,
        help_heading = "Account recovery"
    )]
    pub account_mail_per_hour: i64,
    /// Refuse sign-in (403) until the account's email address is verified.
    #[arg(long = "require-verified-email", env = "REQUIRE_VERIFIED_EMAIL", default_value = "false",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(),
          help_heading = "Account recovery")]
    pub require_verified_email: bool,

    /// The WebAuthn relying party id for passkeys: the site's domain (its host, or a parent
    /// domain of it); default `PUBLIC_URL`'s host. Passkeys are bound to it: changing it
    /// orphans every registered passkey.
    #[arg(
        long = "webauthn-rp-id",
        env = "WEBAUTHN_RP_ID",
        help_heading = "Passkeys"
    )]
    pub webauthn_rp_id: Option<String>,
    /// Origins besides `PUBLIC_URL`'s whose passkey answers are accepted (comma-separated,
    /// e.g. `https://localhost:8443`); each must be within the relying party id.
    #[arg(
        long = "webauthn-origins",
        env = "WEBAUTHN_ORIGINS",
        value_delimiter = ',',
        help_heading = "Passkeys"
    )]
    pub webauthn_origins: Vec<String>,

    #[command(flatten)]
    pub mail: MailSettings,
    #[command(flatten)]
    pub web: WebSettings,
    #[command(flatten)]
    pub dev: DevSwitch,
    #[command(flatten)]
    pub logs: LogSettings,
}

impl AuthConfig {
    /// Checks the parsed settings and loads the secrets (call after telemetry starts, so the
    /// development switch's warnings are logged).
    ///
    /// Errors: a missing, short or placeholder secret or database password without the
    /// development switch; `*` among the allowed origins. (A missing signing key is
    /// reported when the keys load.)
    pub fn resolve(mut self) -> anyhow::Result<Self> {
        let dev = self.dev.allow_insecure_dev_secrets;
        self.database_url = database_url(
            "AUTH_DATABASE_URL",
            self.database_url_arg.take().as_ref(),
            AUTH_DEV_URL,
            dev,
        )?;
        self.refresh_keys = secrets::load(
            "REFRESH_TOKEN_SECRET",
            self.refresh_secret_arg.take().as_ref(),
            "switchboard-dev-refresh-successor-key",
            dev,
        )?;
        self.web.check()?;
        if self.mail.smtp_url.is_none() && dev {
            self.mail.smtp_url = Some(SecretString::from(SMTP_DEV_URL));
        }
        self.mail.public_url = self.mail.public_url.trim_end_matches('/').to_owned();
        self.signing_key_files.retain(|f| !f.trim().is_empty());
        Ok(self)
    }
}
