//! Mail delivery settings (`auth --help`, "Mail"): where the outbox worker sends
//! ([`crate::platform::mail`]) and what the links in mail point at.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::{milliseconds, seconds, secret};

/// How mail leaves: an SMTP relay, the sender, and the public address links point at.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Mail")]
pub struct MailSettings {
    /// SMTP relay as a URL (lettre's forms): `smtp://host:25` (plaintext, local relays only),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`
    /// (TLS). Unset: mail is queued in the outbox and not sent (a warning at start); the
    /// development switch uses the local stack's `smtp://127.0.0.1:1025`.
    #[arg(long = "smtp-url", env = "SMTP_URL", value_parser = secret, value_name = "URL",
          hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// The sender of every mail (RFC 5322 mailbox), also the domain of its `Message-ID`.
    #[arg(
        long = "mail-from",
        env = "MAIL_FROM",
        default_value = "Switchboard <no-reply@switchboard.localhost>"
    )]
    pub from: String,
    /// Where people open the web client (no trailing slash): the base of every link in mail.
    #[arg(
        long = "public-url",
        env = "PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,
    /// Longest wait between two attempts at one mail, in seconds (the wait doubles from 1 s
    /// up to this while the relay refuses or is down).
    #[arg(long = "mail-retry-max-secs", env = "MAIL_RETRY_MAX_SECS", default_value = "300",
          value_parser = seconds)]
    pub retry_max: Duration,
    /// How often the worker looks for due mail when nothing woke it, in milliseconds (a mail
    /// written by this instance wakes it at once).
    #[arg(long = "mail-poll-interval-ms", env = "MAIL_POLL_INTERVAL_MS", default_value = "1000",
          value_parser = milliseconds)]
    pub poll_interval: Duration,
}

/// The local stack's SMTP server (`scripts/run.sh`), used only under the development switch.
pub const SMTP_DEV_URL: &str = "smtp://127.0.0.1:1025";
