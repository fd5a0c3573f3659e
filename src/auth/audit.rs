//! The audit trail (`audit.events`, postgres/audit.sql): an append-only, hash-chained
//! record of what happened to each account, written in the transaction of the change (so an
//! event exists exactly when its change committed), and `GET /auth/me/events`, where users
//! read their own.

use actix_web::{
    http::header,
    web::{self, Query},
    HttpRequest, HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{caller::AuthCaller, State};
use crate::platform::{db::Traced, error::ApiError};

/// What happened (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    AccountCreated,
    SignedIn,
    /// A wrong password (or a locked account) at sign-in.
    SignInFailed,
    /// A wrong, stale or replayed code at the second step.
    SecondFactorFailed,
    /// A rotated refresh token was presented again; its session ended (RFC 9700 §4.14).
    RefreshReuse,
    /// A session was ended by its user (sign-out, or revoked from another session).
    SessionEnded,
    PasswordChanged,
    PasswordResetRequested,
    PasswordReset,
    EmailChangeRequested,
    EmailVerified,
    EmailChanged,
    TwoFactorEnabled,
    TwoFactorDisabled,
    RecoveryCodeUsed,
    PasskeyAdded,
    PasskeyRemoved,
    AccountDeleted,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::AccountCreated => "account_created",
            Self::SignedIn => "signed_in",
            Self::SignInFailed => "sign_in_failed",
            Self::SecondFactorFailed => "second_factor_failed",
            Self::RefreshReuse => "refresh_reuse",
            Self::SessionEnded => "session_ended",
            Self::PasswordChanged => "password_changed",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
            Self::EmailChangeRequested => "email_change_requested",
            Self::EmailVerified => "email_verified",
            Self::EmailChanged => "email_changed",
            Self::TwoFactorEnabled => "two_factor_enabled",
            Self::TwoFactorDisabled => "two_factor_disabled",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::PasskeyAdded => "passkey_added",
            Self::PasskeyRemoved => "passkey_removed",
            Self::AccountDeleted => "account_deleted",
        }
    }
}

/// Where a request came from: the client address NGINX vouches for (`X-Real-IP`, from the
/// trusted-proxy rule) or the peer, and the user agent (at most 512 characters).
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Client {
    /// The client of `req`.
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            ip: req
                .headers()
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.peer_addr().map(|a| a.ip().to_string())),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
        }
    }
}

/// Appends an event (in `db`'s transaction, when it is one). `detail` is a short note
/// without secrets (a new address, a session's end reason).
///
/// Errors: the insert fails.
pub async fn record(
    db: &impl Traced,
    kind: Kind,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    client: &Client,
    detail: Option<&str>,
) -> Result<(), ApiError> {
    db.execute_t(
        "INSERT INTO audit.events (kind, user_id, session_id, ip, user_agent, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &kind.as_str(),
            &user_id,
            &session_id,
            &client.ip,
            &client.user_agent,
            &detail,
        ],
    )
    .await?;
    Ok(())
}

/// One event as its user sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Place in the audit chain (increasing).
    pub pos: i64,
    pub at: DateTime<Utc>,
    /// `signed_in`, `sign_in_failed`, `password_changed`, … (see the API's `Kind` schema).
    pub kind: String,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// `GET /auth/me/events` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Events {
    /// Newest first.
    pub events: Vec<Event>,
}

/// `GET /auth/me/events` query.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// 1–100, default 50.
    pub limit: Option<i64>,
    /// Events older than this `pos` (the last one of the previous page).
    pub before: Option<i64>,
}

/// `GET /auth/me/events?limit=&before=`: the caller's security events, newest first. 400
/// for a `limit` outside 1–100.
#[utoipa::path(get, path = "/auth/me/events", tag = "account", operation_id = "list_security_events", params(EventsQuery),
    responses((status = 200, description = "The caller's security events, newest first.", body = Events)))]
pub async fn list(
    state: web::Data<State>,
    caller: AuthCaller,
    query: Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 100".into()));
    }
    let db = state.db.get().await?;
    let rows = db
        .query_t(
            "SELECT pos, at, kind, session_id, ip, user_agent, detail FROM audit.events
             WHERE user_id = $1 AND ($2::bigint IS NULL OR pos < $2)
             ORDER BY pos DESC LIMIT $3",
            &[&caller.user_id, &query.before, &limit],
        )
        .await?;
    let events = rows
        .iter()
        .map(|r| Event {
            pos: r.get("pos"),
            at: r.get("at"),
            kind: r.get("kind"),
            session_id: r.get("session_id"),
            ip: r.get("ip"),
            user_agent: r.get("user_agent"),
            detail: r.get("detail"),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Events { events }))
}

/// How often the chain's head is written to the log.
const ANCHOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes the audit chain's head (`pos`, `row_hash`) to the service log once a minute when
/// it moved. The log is shipped off the database host, so a rewritten chain — hashes
/// recomputed by whoever can bypass the table's triggers — no longer ends in a head the
/// log saw.
pub fn spawn_anchor(db: crate::platform::db::Primary, tasks: &crate::platform::tasks::Tasks) {
    tasks.spawn("audit anchor", async move {
        let mut last: Option<i64> = None;
        loop {
            tokio::time::sleep(ANCHOR_INTERVAL).await;
            let head = match db.get().await {
                Ok(conn) => conn
                    .query_opt_t(
                        "SELECT pos, encode(row_hash, 'hex') FROM audit.events
                         ORDER BY pos DESC LIMIT 1",
                        &[],
                    )
                    .await
                    .map_err(ApiError::from),
                Err(e) => Err(e.into()),
            };
            match head {
                Ok(Some(row)) => {
                    let pos: i64 = row.get(0);
                    if last != Some(pos) {
                        let hash: String = row.get(1);
                        tracing::info!(audit.pos = pos, audit.head = %hash, "audit chain head");
                        last = Some(pos);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "audit chain head not read"),
            }
        }
    });
}
