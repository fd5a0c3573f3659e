//! Starting and ending sessions. A session is one sign-in on one device: the family of
//! refresh tokens that descends from it. Every end is announced on the primary (NOTIFY, in
//! the ending transaction) so every messaging instance refuses the session's access tokens
//! for as long as they could still verify, and closes its sockets.

use crate::platform::db::{Traced, Tx};
use actix_web::HttpRequest;
use chrono::Utc;
use uuid::Uuid;

use super::{refresh, State};
use crate::{platform::access::AccessClaims, platform::bus, platform::error::ApiError};

/// Why a session ended (the `revoked_reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    /// A rotated refresh token was presented again (RFC 9700 §4.14).
    Reuse,
    /// Revoked by its owner from another session.
    Revoked,
    /// The password changed.
    Password,
    /// The account was deleted.
    Deleted,
    /// Idle or absolute lifetime passed.
    Expired,
}

impl EndReason {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Reuse => "reuse",
            Self::Revoked => "revoked",
            Self::Password => "password",
            Self::Deleted => "deleted",
            Self::Expired => "expired",
        }
    }
}

/// Creates a session and its first (random) refresh token; returns `(session id, token)`.
///
/// Errors: the inserts fail.
pub async fn start(
    db: &impl Traced,
    state: &State,
    req: &HttpRequest,
    user_id: Uuid,
) -> Result<(Uuid, String), ApiError> {
    let session_id = Uuid::now_v7();
    let super::audit::Client { ip, user_agent } = super::audit::Client::of(req);
    let ttl = state.cfg.refresh_ttl.as_secs_f64();
    db.execute_t(
        "INSERT INTO auth.sessions (id, user_id, expires_at, user_agent, ip)
         VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5)",
        &[&session_id, &user_id, &ttl, &user_agent, &ip],
    )
    .await?;
    let (token, hash) = refresh::generate();
    db.execute_t(
        "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
        &[&hash, &session_id],
    )
    .await?;
    Ok((session_id, token))
}

/// Signs an access token for a session.
///
/// Errors: signing fails.
pub fn access_token(state: &State, user_id: Uuid, session_id: Uuid) -> Result<String, ApiError> {
    let now = Utc::now().timestamp();
    let ttl = i64::try_from(state.cfg.access_ttl.as_secs()).unwrap_or(300);
    let claims = AccessClaims {
        iss: state.cfg.tokens.issuer.clone(),
        aud: state.cfg.tokens.audience.clone(),
        sub: user_id,
        sid: session_id,
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: Uuid::now_v7(),
    };
    Ok(state.keys.sign(&claims)?)
}

/// Ends the active sessions of `user_id` that `filter` selects — `Only(id)`, `AllBut(id)` or
/// `All` — and returns their ids. In the same transaction it announces them to every
/// messaging instance (`NOTIFY`, delivered when and only when the transaction commits:
/// PostgreSQL docs, NOTIFY), which refuse their tokens from then on and close their sockets.
/// Pass the transaction that makes the change, so the end is never committed unannounced.
///
/// Errors: the update or the notification fails.
pub async fn end(
    tx: &Tx<'_>,
    user_id: Uuid,
    filter: Which,
    reason: EndReason,
) -> Result<Vec<Uuid>, ApiError> {
    let (only, except, passkey) = match filter {
        Which::Only(id) => (Some(id), None, None),
        Which::AllBut(id) => (None, Some(id), None),
        Which::All => (None, None, None),
        Which::SignedInWith(passkey) => (None, None, Some(passkey)),
    };
    let rows = tx
        .query_t(
            "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $4
             WHERE user_id = $1 AND revoked_at IS NULL
               AND ($2::uuid IS NULL OR id = $2)
               AND ($3::uuid IS NULL OR id <> $3)
               AND ($5::uuid IS NULL OR passkey_id = $5)
             RETURNING id",
            &[&user_id, &only, &except, &reason.as_str(), &passkey],
        )
        .await?;
    let ended: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    for payload in bus::batch_payloads(&bus_events(&ended, reason.as_str())) {
        tx.execute_t("SELECT pg_notify($1, $2)", &[&bus::CHANNEL, &payload])
            .await?;
    }
    Ok(ended)
}

/// A session's end as the bus carries it: `{"session_revoked": {session_id, reason}}`
/// (read by messaging as `crate::messaging::events::BusEvent::SessionRevoked`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionEnded {
    pub session_id: Uuid,
    /// An [`EndReason`] as text.
    pub reason: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum AuthEvent {
    SessionRevoked(SessionEnded),
}

/// The bus events announcing the end of `sessions` for `reason`.
pub fn bus_events(sessions: &[Uuid], reason: &str) -> Vec<impl serde::Serialize> {
    sessions
        .iter()
        .map(|&session_id| {
            AuthEvent::SessionRevoked(SessionEnded {
                session_id,
                reason: reason.to_owned(),
            })
        })
        .collect()
}

/// Which of a user's sessions [`end`] ends.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Only(Uuid),
    AllBut(Uuid),
    All,
    /// The sessions signed in with this passkey.
    SignedInWith(Uuid),
}
