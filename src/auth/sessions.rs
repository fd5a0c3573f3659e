//! The caller's sessions: list them, end one, end all but the current one.

use crate::platform::db::Traced;
use actix_web::{
    web::{self, Path},
    HttpRequest, HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{
    audit::{self, Kind},
    caller::AuthCaller,
    session::{self, EndReason, Which},
    State,
};
use crate::platform::error::ApiError;

/// One active session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// Absolute end of the session.
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The session of the access token that asked.
    pub current: bool,
}

/// `GET /auth/sessions`: 200 `{sessions: [SessionInfo]}`, most recently used first.
#[utoipa::path(get, path = "/auth/sessions", tag = "sessions",
    responses((status = 200, description = "The caller's active sessions, most recently used first.", body = SessionList)))]
pub async fn list(state: web::Data<State>, caller: AuthCaller) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    let rows = db
        .query_t(
            "SELECT id, created_at, last_used_at, expires_at, user_agent, ip
             FROM auth.sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
               AND last_used_at > now() - make_interval(secs => $2)
             ORDER BY last_used_at DESC, id DESC",
            &[&caller.user_id, &state.cfg.refresh_idle.as_secs_f64()],
        )
        .await?;
    let sessions: Vec<SessionInfo> = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get("id");
            SessionInfo {
                id,
                created_at: r.get("created_at"),
                last_used_at: r.get("last_used_at"),
                expires_at: r.get("expires_at"),
                user_agent: r.get("user_agent"),
                ip: r.get("ip"),
                current: id == caller.session_id,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionList { sessions }))
}

/// `GET /auth/sessions` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// `DELETE /auth/sessions` answer: how many sessions ended.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub revoked: usize,
}

/// `DELETE /auth/sessions/{id}`: ends one of the caller's sessions (its refresh tokens stop
/// working and its sockets close). 204; 404 if it is not the caller's or already ended.
#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path, description = "session id")),
    responses((status = 204, description = "The session ended.")))]
pub async fn revoke(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let id = id.into_inner();
    let ended = session::end(&tx, caller.user_id, Which::Only(id), EndReason::Revoked).await?;
    if ended.is_empty() {
        return Err(ApiError::NotFound("session not found".into()));
    }
    let detail = format!("revoked from session {}", caller.session_id);
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::SessionEnded,
        Some(caller.user_id),
        Some(id),
        &client,
        Some(&detail),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /auth/sessions`: ends every session of the caller but the current one.
/// 200 `{revoked: <count>}`.
#[utoipa::path(delete, path = "/auth/sessions", tag = "sessions",
    responses((status = 200, description = "Every other session ended.", body = Revoked)))]
pub async fn revoke_others(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let ended = session::end(
        &tx,
        caller.user_id,
        Which::AllBut(caller.session_id),
        EndReason::Revoked,
    )
    .await?;
    let client = audit::Client::of(&req);
    for id in &ended {
        let detail = format!("revoked from session {}", caller.session_id);
        audit::record(
            &tx,
            Kind::SessionEnded,
            Some(caller.user_id),
            Some(*id),
            &client,
            Some(&detail),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(Revoked {
        revoked: ended.len(),
    }))
}
