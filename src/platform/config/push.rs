//! Web Push settings (`messaging --help`, "Web Push"): the VAPID key and contact (RFC 8292),
//! which push services may be called, and how long and how often a push is tried.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::seconds;

/// Where and how pushes go. No `VAPID_PRIVATE_KEY_FILE`: push is off (subscribing answers
/// 404; the feed and mail still work).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Web Push")]
pub struct PushSettings {
    /// The VAPID private key (RFC 8292 §3): a PEM file of a P-256 key, e.g. from
    /// `openssl ecparam -name prime256v1 -genkey -noout -out vapid.pem`. Its public key is
    /// what browsers subscribe with: replacing it orphans every subscription.
    #[arg(
        long = "vapid-private-key-file",
        env = "VAPID_PRIVATE_KEY_FILE",
        value_name = "PATH"
    )]
    pub vapid_private_key_file: Option<PathBuf>,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact the push services may use
    /// (RFC 8292 §2.1). Required with a key.
    #[arg(long = "vapid-subject", env = "VAPID_SUBJECT", value_name = "URI")]
    pub vapid_subject: Option<String>,
    /// The push services subscriptions may point at, as origins (comma-separated; `*.` for
    /// any subdomain). The server calls these URLs, so nothing else is accepted (no request
    /// to internal addresses can be planted through a subscription).
    #[arg(
        long = "push-endpoint-origins",
        env = "PUSH_ENDPOINT_ORIGINS",
        value_delimiter = ',',
        default_value = "https://fcm.googleapis.com,https://updates.push.services.mozilla.com,https://*.push.apple.com,https://*.notify.windows.com"
    )]
    pub endpoint_origins: Vec<String>,
    /// How long a push service keeps an undelivered push, in seconds (RFC 8030 §5.2 `TTL`).
    #[arg(long = "push-ttl-secs", env = "PUSH_TTL_SECS", default_value = "86400",
          value_parser = seconds)]
    pub push_ttl: Duration,
    /// Longest wait between two attempts at one push, in seconds (the wait doubles from 1 s
    /// up to this while the push service refuses or cannot be reached; 5 attempts at most).
    #[arg(long = "push-retry-max-secs", env = "PUSH_RETRY_MAX_SECS", default_value = "300",
          value_parser = seconds)]
    pub push_retry_max: Duration,
}
