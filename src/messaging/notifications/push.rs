//! Web Push (issue 19): browsers subscribe (RFC 8030 push services, found through the
//! Push API), and messages for people away reach them as pushes whose payload is encrypted
//! for the browser (RFC 8291, `aes128gcm`) and signed for the push service with the
//! server's VAPID key (RFC 8292), through the `web-push` crate; the requests go out through
//! reqwest.
//!
//! - `GET /api/push/key`: the VAPID public key (`applicationServerKey`);
//! - `POST /api/push/subscriptions`, `DELETE /api/push/subscriptions/{id}`: a subscription
//!   belongs to the session that made it and ends with it;
//! - the sender ([`spawn_sender`]): claims due rows of `messaging.push_deliveries` (written
//!   by the notification worker) one at a time, each marked `sending` and committed with
//!   everything its push needs just before the call, so a push goes out at most once per
//!   message per device and a pass cut short strands no claimed row; the outcome is recorded
//!   on a fresh connection (twice if need be); a push service's 404/410 drops the
//!   subscription, 429/5xx or no connection retries with backoff (5 attempts), a timeout
//!   counts as sent (it may have arrived).
//!
//! A subscription's endpoint must be one of `PUSH_ENDPOINT_ORIGINS`: the server calls it,
//! so a subscription cannot make it call anything else.

use std::{sync::Arc, time::Duration};

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpResponse,
};
use anyhow::Context;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use web_push::{
    request_builder::build_request, ContentEncoding, PartialVapidSignatureBuilder,
    SubscriptionInfo, Urgency, VapidSignatureBuilder, WebPushMessageBuilder,
};

use super::super::{caller::Caller, consistency, State};
use crate::platform::{
    config::PushSettings,
    db::{self, Traced},
    error::{ApiError, FieldErrors},
    tasks::Tasks,
};

/// Push subscriptions one account may hold (devices, browsers).
pub const MAX_SUBSCRIPTIONS: i64 = 10;
/// Attempts at one push before it is given up.
pub const MAX_ATTEMPTS: i32 = 5;
/// Deliveries one sender pass claims at most (one at a time) before it yields.
const BATCH: i64 = 50;
/// Characters of a message a push may carry (when previews are on).
pub const PREVIEW_CHARS: usize = 100;

/// The configured push: the VAPID key, the allowed push services, the HTTP client.
pub struct Push {
    vapid: PartialVapidSignatureBuilder,
    /// The VAPID public key, base64url (an uncompressed P-256 point).
    pub public_key: String,
    subject: String,
    origins: Vec<AllowedOrigin>,
    ttl: u32,
    retry_max: Duration,
    client: reqwest::Client,
}

/// One of `PUSH_ENDPOINT_ORIGINS`: a scheme, a host (or `*.` and a domain) and a port.
#[derive(Debug, Clone)]
struct AllowedOrigin {
    scheme: String,
    host: String,
    any_subdomain: bool,
    port: Option<u16>,
}

impl AllowedOrigin {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (wild, rest) = match text.split_once("://*.") {
            Some((scheme, rest)) => (true, format!("{scheme}://{rest}")),
            None => (false, text.to_owned()),
        };
        let url = reqwest::Url::parse(&rest)
            .with_context(|| format!("PUSH_ENDPOINT_ORIGINS entry {text:?}"))?;
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: url
                .host_str()
                .with_context(|| format!("PUSH_ENDPOINT_ORIGINS entry {text:?} has no host"))?
                .to_ascii_lowercase(),
            any_subdomain: wild,
            port: url.port_or_known_default(),
        })
    }

    fn admits(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let host_ok = if self.any_subdomain {
            host.ends_with(&format!(".{}", self.host))
        } else {
            host == self.host
        };
        url.scheme() == self.scheme
            && host_ok
            && url.port_or_known_default() == self.port
            && url.username().is_empty()
            && url.password().is_none()
    }
}

impl Push {
    /// Push from the settings: `None` without a VAPID key (push is off).
    ///
    /// Errors: the key file cannot be read or is not a P-256 key, no `VAPID_SUBJECT` (or
    /// one that is neither `mailto:` nor `https:`), an origin that does not parse.
    pub fn from_settings(settings: &PushSettings) -> anyhow::Result<Option<Self>> {
        let Some(path) = &settings.vapid_private_key_file else {
            tracing::warn!("VAPID_PRIVATE_KEY_FILE is not set: Web Push is off");
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("VAPID_PRIVATE_KEY_FILE {}", path.display()))?;
        let vapid = VapidSignatureBuilder::from_pem_no_sub(&pem[..]).map_err(|e| {
            anyhow::anyhow!("VAPID_PRIVATE_KEY_FILE is not a P-256 private key: {e:?}")
        })?;
        let subject = settings
            .vapid_subject
            .clone()
            .filter(|s| s.starts_with("mailto:") || s.starts_with("https://"))
            .context("VAPID_SUBJECT must be a mailto: or https: URI (RFC 8292 §2.1)")?;
        let origins = settings
            .endpoint_origins
            .iter()
            .map(|o| AllowedOrigin::parse(o.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("push HTTP client")?;
        Ok(Some(Self {
            public_key: URL_SAFE_NO_PAD.encode(vapid.get_public_key()),
            vapid,
            subject,
            origins,
            ttl: u32::try_from(settings.push_ttl.as_secs()).unwrap_or(u32::MAX),
            retry_max: settings.push_retry_max,
            client,
        }))
    }

    /// Whether the server may call `endpoint`.
    fn admits(&self, endpoint: &str) -> bool {
        reqwest::Url::parse(endpoint).is_ok_and(|url| self.origins.iter().any(|o| o.admits(&url)))
    }
}

fn push_off() -> ApiError {
    ApiError::NotFound("Web Push is not configured on this server".into())
}

/// `GET /api/push/key` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    /// The VAPID public key, base64url: `applicationServerKey` for `pushManager.subscribe`.
    pub public_key: String,
}

/// `GET /api/push/key`: the VAPID public key. 404 when push is not configured.
#[utoipa::path(get, path = "/api/push/key", tag = "notifications", operation_id = "push_key",
    responses((status = 200, description = "The key to subscribe with.", body = PublicKey)))]
pub async fn key(state: web::Data<State>, _caller: Caller) -> Result<HttpResponse, ApiError> {
    let push = state.push.as_ref().ok_or_else(push_off)?;
    Ok(HttpResponse::Ok().json(PublicKey {
        public_key: push.public_key.clone(),
    }))
}

/// The keys of a subscription (`PushSubscription.toJSON().keys`).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Keys {
    /// The browser's P-256 public key, base64url (65 bytes decoded).
    #[schema(max_length = 128)]
    pub p256dh: String,
    /// The authentication secret, base64url (16 bytes decoded).
    #[schema(max_length = 64)]
    pub auth: String,
}

/// `POST /api/push/subscriptions` body: `PushSubscription.toJSON()`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewSubscription {
    /// The push service URL; must be one of `PUSH_ENDPOINT_ORIGINS`.
    #[schema(max_length = 2048)]
    pub endpoint: String,
    pub keys: Keys,
}

/// A subscription as its owner sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: Uuid,
    pub endpoint: String,
}

/// `POST /api/push/subscriptions` `{endpoint, keys: {p256dh, auth}}`: 201 with the
/// subscription, which belongs to the caller's session (it ends when the session does). The
/// same endpoint again (the same browser) replaces the earlier one, whoever made it. 422 for
/// an endpoint outside `PUSH_ENDPOINT_ORIGINS` or keys of the wrong shape; 409 past 10
/// subscriptions per account; 404 when push is not configured.
#[utoipa::path(post, path = "/api/push/subscriptions", tag = "notifications", operation_id = "subscribe_push",
    request_body = NewSubscription,
    responses((status = 201, description = "Subscribed.", body = Subscription)))]
pub async fn subscribe(
    state: web::Data<State>,
    caller: Caller,
    body: Json<NewSubscription>,
) -> Result<HttpResponse, ApiError> {
    let push = state.push.as_ref().ok_or_else(push_off)?;
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    if body.endpoint.len() > 2048 || !push.admits(&body.endpoint) {
        errors.insert(
            "endpoint".into(),
            vec!["not a push service this server sends to (PUSH_ENDPOINT_ORIGINS)".into()],
        );
    }
    let decoded = |v: &str| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok();
    let p256dh = decoded(&body.keys.p256dh).filter(|k| k.len() == 65 && k[0] == 4);
    let auth = decoded(&body.keys.auth).filter(|a| a.len() == 16);
    if p256dh.is_none() {
        errors.insert(
            "keys.p256dh".into(),
            vec!["a P-256 public key, uncompressed, base64url".into()],
        );
    }
    if auth.is_none() {
        errors.insert("keys.auth".into(), vec!["16 bytes, base64url".into()]);
    }
    ApiError::check(errors)?;
    let (Some(p256dh), Some(auth)) = (p256dh, auth) else {
        return Err(anyhow::anyhow!("keys checked above").into());
    };
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    // The same browser again (its endpoint): the old subscription and its pending pushes go.
    tx.execute_t(
        "DELETE FROM messaging.push_subscriptions WHERE endpoint = $1",
        &[&body.endpoint],
    )
    .await?;
    // Per user, one at a time (a transaction-level advisory lock), so concurrent subscribes
    // cannot pass the cap together.
    tx.execute_t(
        "SELECT pg_advisory_xact_lock(hashtext('push:' || $1::uuid::text))",
        &[&caller.user_id],
    )
    .await?;
    let held: i64 = tx
        .query_one_t(
            "SELECT count(*) FROM messaging.push_subscriptions WHERE user_id = $1",
            &[&caller.user_id],
        )
        .await?
        .get(0);
    if held >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::Conflict(format!(
            "an account has at most {MAX_SUBSCRIPTIONS} push subscriptions; sign out an old device first"
        )));
    }
    let id = Uuid::now_v7();
    tx.execute_t(
        "INSERT INTO messaging.push_subscriptions (id, user_id, session_id, endpoint, p256dh, auth)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &id,
            &caller.user_id,
            &caller.session_id,
            &body.endpoint,
            &URL_SAFE_NO_PAD.encode(p256dh),
            &URL_SAFE_NO_PAD.encode(auth),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(consistency::written(&state, &conn, StatusCode::CREATED)
        .await?
        .json(Subscription {
            id,
            endpoint: body.endpoint,
        }))
}

/// `DELETE /api/push/subscriptions/{id}`: 204; 404 unless it is the caller's.
#[utoipa::path(delete, path = "/api/push/subscriptions/{id}", tag = "notifications", operation_id = "unsubscribe_push",
    params(("id" = Uuid, Path, description = "subscription id")),
    responses((status = 204, description = "Unsubscribed.")))]
pub async fn unsubscribe(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    let gone = conn
        .execute_t(
            "DELETE FROM messaging.push_subscriptions WHERE id = $1 AND user_id = $2",
            &[&id.into_inner(), &caller.user_id],
        )
        .await?;
    if gone == 0 {
        return Err(ApiError::NotFound("no such subscription".into()));
    }
    Ok(consistency::written(&state, &conn, StatusCode::NO_CONTENT)
        .await?
        .finish())
}

/// What a push carries (the service worker shows it): who wrote where, and the start of
/// the message unless the recipient turned previews off.
#[derive(Debug, Serialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    /// The conversation's name, or the sender's display name for a direct one.
    pub title: String,
    pub sender: Option<String>,
    pub preview: Option<String>,
    /// The message mentions the recipient.
    pub mention: bool,
}

/// Claims the next due delivery, marks it `sending` and returns everything its push needs
/// (the subscription, the message and its conversation, whether the recipient's session is
/// still active, whether previews are on), in one autocommitted statement: once a delivery
/// is `sending`, no database call stands between it and the push service, so a connection
/// lost mid-pass (a failover, the instance stopping) strands no claimed push. A delivery of
/// a message deleted or read, or of a recipient no longer in the conversation, is `skipped`
/// instead (`wanted` false). `$1`: the preview's length in characters.
const CLAIM_NEXT: &str = "
WITH due AS (
    SELECT d.message_id, d.subscription_id, d.user_id FROM messaging.push_deliveries d
    WHERE d.state = 'pending' AND d.due_at <= now()
    ORDER BY d.due_at LIMIT 1 FOR UPDATE SKIP LOCKED
), facts AS (
    SELECT d.message_id, d.subscription_id,
           m.deleted_at IS NULL AND p.user_id IS NOT NULL AND p.last_read_seq < m.seq AS wanted,
           s.endpoint, s.p256dh, s.auth,
           s.id IS NOT NULL AND auth.session_active(s.session_id, s.user_id) AS active,
           m.conversation_id, m.seq, left(m.content, $1) AS preview,
           (s.user_id = ANY (m.mentions) OR m.mentions_all) AS mention,
           coalesce(ns.previews, true) AS previews,
           CASE WHEN c.is_group THEN c.name ELSE u.display_name END AS title,
           u.display_name AS sender
    FROM due d
    JOIN messaging.messages m ON m.id = d.message_id
    JOIN messaging.conversations c ON c.id = m.conversation_id
    LEFT JOIN messaging.participants p ON p.conversation_id = m.conversation_id
     AND p.user_id = d.user_id AND p.left_at IS NULL
    LEFT JOIN messaging.push_subscriptions s ON s.id = d.subscription_id
    LEFT JOIN auth.public_profiles u ON u.id = m.sender_id
    LEFT JOIN messaging.notification_settings ns ON ns.user_id = s.user_id
)
UPDATE messaging.push_deliveries d
SET state = CASE WHEN f.wanted THEN 'sending' ELSE 'skipped' END,
    attempts = d.attempts + CASE WHEN f.wanted THEN 1 ELSE 0 END, updated_at = now()
FROM facts f
WHERE d.message_id = f.message_id AND d.subscription_id = f.subscription_id
RETURNING d.message_id, d.subscription_id, d.attempts, f.wanted, f.endpoint, f.p256dh, f.auth,
          f.active, f.conversation_id, f.seq, f.preview, f.mention, f.previews, f.title,
          f.sender";

/// Starts the push sender (when push is configured): a pass every `poll`, and again at
/// once while a pass finds a full batch. Returns the handle that stops it ([`SenderStop`]).
pub fn spawn_sender(state: State, poll: Duration, tasks: &Tasks) -> Option<SenderStop> {
    let push = state.push.clone()?;
    // Cancelled by the service's stop, or earlier by `SenderStop`.
    let stop = tasks.child_token();
    let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
    let handle = SenderStop {
        stop: stop.clone(),
        stopped,
    };
    tasks.spawn_graceful(async move {
        while !stop.is_cancelled() {
            let full = match send_pass(&state, &push, &stop).await {
                Ok(n) => n >= BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "push pass failed");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        let _ = stopped_tx.send(true);
    });
    Some(handle)
}

/// Stops the push sender, called before the HTTP server stops: its HTTP workers end with
/// the pooled connections they made, and a claim in flight on one of those would be
/// committed (`sending`) with its answer lost — a push lost for good. Stopped first, the
/// sender claims nothing more, finishes the push it has claimed, records it and ends while
/// every connection still works.
pub struct SenderStop {
    stop: CancellationToken,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl SenderStop {
    /// Tells the sender to claim nothing more and waits, at most `grace`, until it has ended
    /// (a push service slower than that loses the push in flight: at most once).
    pub async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.stopped.wait_for(|done| *done)).await;
    }
}

/// How one push attempt ended.
enum Sent {
    Delivered,
    /// The push service says the subscription is gone (404, 410): drop it.
    Gone,
    /// Refused or unreachable before anything was accepted: try again later.
    Retry(String),
    /// Not to be tried again (another 4xx, a timeout, a payload that cannot be built).
    Failed(String),
}

/// One pass: claims due deliveries one at a time ([`CLAIM_NEXT`]), up to [`BATCH`] or until
/// `stop`, and pushes each. Returns how many it claimed.
///
/// Errors: the database fails (a claim, or recording an outcome twice in a row).
async fn send_pass(
    state: &State,
    push: &Arc<Push>,
    stop: &CancellationToken,
) -> Result<usize, ApiError> {
    let mut claimed = 0;
    // A stopping instance claims nothing more (see [`SenderStop`]).
    while claimed < BATCH as usize && !stop.is_cancelled() {
        // A connection per step: one held across the pass could be one an HTTP worker made,
        // which ends with that worker when the instance stops.
        let Some(row) = state
            .db
            .primary()
            .await?
            .query_opt_t(CLAIM_NEXT, &[&(PREVIEW_CHARS as i32)])
            .await?
        else {
            break;
        };
        claimed += 1;
        if !row.get::<_, bool>("wanted") {
            continue;
        }
        let message_id: Uuid = row.get("message_id");
        let subscription_id: Uuid = row.get("subscription_id");
        let attempts: i32 = row.get("attempts");
        let outcome = if row.get::<_, bool>("active") {
            send_one(push, &row, message_id).await
        } else {
            Sent::Gone
        };
        // The push is out (or given up): what happened is recorded, on a second connection if
        // the first is lost meanwhile, so a delivered push is never left `sending`.
        db::record_twice("push outcome", || {
            record(state, push, message_id, subscription_id, attempts, &outcome)
        })
        .await?;
    }
    Ok(claimed)
}

/// Records how a claimed push ended: `sent`, `pending` again after a backoff (while attempts
/// remain), `failed`, or the subscription dropped (gone). Idempotent.
///
/// Errors: the database fails.
async fn record(
    state: &State,
    push: &Push,
    message_id: Uuid,
    subscription_id: Uuid,
    attempts: i32,
    outcome: &Sent,
) -> Result<(), ApiError> {
    let conn = state.db.primary().await?;
    let (state_after, detail, retry_in) = match outcome {
        Sent::Delivered => ("sent", None, None),
        Sent::Gone => {
            conn.execute_t(
                "DELETE FROM messaging.push_subscriptions WHERE id = $1",
                &[&subscription_id],
            )
            .await?;
            return Ok(());
        }
        Sent::Retry(why) if attempts < MAX_ATTEMPTS => {
            let wait = Duration::from_secs(1u64 << attempts.clamp(0, 16)).min(push.retry_max);
            ("pending", Some(why.as_str()), Some(wait))
        }
        Sent::Retry(why) | Sent::Failed(why) => ("failed", Some(why.as_str()), None),
    };
    if let Some(detail) = detail {
        tracing::info!(message.id = %message_id, subscription.id = %subscription_id, attempts, state = state_after, detail, "push not delivered");
    }
    conn.execute_t(
        "UPDATE messaging.push_deliveries
         SET state = $3, detail = $4, updated_at = now(),
             due_at = now() + make_interval(secs => $5)
         WHERE message_id = $1 AND subscription_id = $2",
        &[
            &message_id,
            &subscription_id,
            &state_after,
            &detail,
            &retry_in.unwrap_or_default().as_secs_f64(),
        ],
    )
    .await?;
    if state_after == "sent" {
        conn.execute_t(
            "UPDATE messaging.push_subscriptions SET last_sent_at = now() WHERE id = $1",
            &[&subscription_id],
        )
        .await?;
    }
    Ok(())
}

/// Encrypts, signs and sends one push.
async fn send_one(push: &Push, row: &tokio_postgres::Row, message_id: Uuid) -> Sent {
    let endpoint: String = row.get("endpoint");
    if !push.admits(&endpoint) {
        return Sent::Failed("the endpoint is no longer among PUSH_ENDPOINT_ORIGINS".into());
    }
    let previews: bool = row.get("previews");
    let payload = Payload {
        kind: "message",
        conversation_id: row.get("conversation_id"),
        message_id,
        seq: row.get("seq"),
        title: row
            .get::<_, Option<String>>("title")
            .unwrap_or_else(|| "Switchboard".into()),
        sender: row.get("sender"),
        preview: if previews { row.get("preview") } else { None },
        mention: row.get::<_, Option<bool>>("mention") == Some(true),
    };
    let Ok(body) = serde_json::to_vec(&payload) else {
        return Sent::Failed("payload".into());
    };
    let subscription = SubscriptionInfo::new(
        endpoint.clone(),
        row.get::<_, String>("p256dh"),
        row.get::<_, String>("auth"),
    );
    // `aud` is the push resource's origin, port included (RFC 8292 §2, RFC 6454 §6.2);
    // the crate's default leaves a non-default port out.
    let Ok(audience) = reqwest::Url::parse(&endpoint).map(|u| u.origin().ascii_serialization())
    else {
        return Sent::Failed("the endpoint is not a URL".into());
    };
    let mut signature = push.vapid.clone().add_sub_info(&subscription);
    signature.add_claim("sub", push.subject.as_str());
    signature.add_claim("aud", audience);
    let message = signature.build().and_then(|signature| {
        let mut builder = WebPushMessageBuilder::new(&subscription);
        builder.set_payload(ContentEncoding::Aes128Gcm, &body);
        builder.set_vapid_signature(signature);
        builder.set_ttl(push.ttl);
        builder.set_urgency(if payload.mention {
            Urgency::High
        } else {
            Urgency::Normal
        });
        builder.build()
    });
    let message = match message {
        Ok(m) => m,
        Err(e) => return Sent::Failed(format!("building the push: {e:?}")),
    };
    let request = build_request::<Vec<u8>>(message);
    let mut outgoing = push.client.post(&endpoint);
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            outgoing = outgoing.header(name.as_str(), value);
        }
    }
    match outgoing.body(request.into_body()).send().await {
        Ok(res) => match res.status().as_u16() {
            200..=299 => Sent::Delivered,
            404 | 410 => Sent::Gone,
            429 | 500..=599 => Sent::Retry(format!("push service answered {}", res.status())),
            other => Sent::Failed(format!("push service answered {other}")),
        },
        // (without_url: the endpoint is a capability URL, kept out of logs.)
        Err(e) if e.is_timeout() => Sent::Failed("timed out (it may have arrived)".into()),
        Err(e) if e.is_connect() => Sent::Retry(format!("no connection: {}", e.without_url())),
        Err(e) => Sent::Failed(format!("request: {}", e.without_url())),
    }
}
