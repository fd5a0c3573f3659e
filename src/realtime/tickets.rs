//! WebSocket tickets and the upgrade (DESIGN.md §4): `POST /api/ws-ticket` issues a
//! single-use ticket for an active session, `GET /ws?ticket=…` redeems it and hands the
//! connection to a [`super::socket`] task.

use crate::platform::db::Traced;
use std::{collections::HashMap, time::Duration};

use actix_web::{
    web::{self, Query},
    HttpRequest, HttpResponse,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    socket::{Socket, TokenLife, MAX_FRAME_BYTES},
    LiveState,
};
use crate::{
    messaging::{
        budget::{self, Budget},
        caller::Caller,
        State,
    },
    platform::error::ApiError,
};

fn ticket_hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// `POST /api/ws-ticket`: 200 `{ticket, expires_in}`; the ticket opens one socket, once,
/// within `expires_in` seconds, for the caller's user and session — only while that session
/// is active (asked of the auth schema through `auth.session_active`, never its tables), and
/// the socket lives no longer than the caller's access token unless a fresh one is presented
/// on it. 401 for an ended session; 429 with `Retry-After` past `WS_TICKETS_PER_MINUTE`.
#[utoipa::path(post, path = "/api/ws-ticket", tag = "realtime",
    responses((status = 200, description = "A single-use ticket for `GET /ws?ticket=…`.", body = Ticket)))]
pub async fn ticket(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let bytes: [u8; 32] = rand::random();
    let ticket = URL_SAFE_NO_PAD.encode(bytes);
    let ttl = state.cfg.ws_ticket_ttl.as_secs_f64();
    let conn = state.db.primary().await?;
    let per_minute = state.cfg.ws_tickets_per_minute;
    budget::spend(
        &conn,
        caller.user_id,
        Budget::Ticket,
        1,
        per_minute,
        Duration::from_secs(60),
        || format!("at most {per_minute} WebSocket tickets per minute; slow down"),
    )
    .await?;
    let issued = conn
        .execute_t(
            "WITH expired AS (DELETE FROM messaging.ws_tickets WHERE expires_at < now() - interval '1 minute')
             INSERT INTO messaging.ws_tickets
                 (ticket_hash, user_id, session_id, expires_at, token_expires_at)
             SELECT $1, $2, $3, now() + make_interval(secs => $4), to_timestamp($5::float8)
             WHERE auth.session_active($3, $2)",
            &[
                &ticket_hash(&ticket),
                &caller.user_id,
                &caller.session_id,
                &ttl,
                &(caller.expires_at as f64),
            ],
        )
        .await?;
    if issued == 0 {
        return Err(ApiError::bearer("session has ended"));
    }
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(Ticket {
            ticket,
            expires_in: state.cfg.ws_ticket_ttl.as_secs(),
        }))
}

/// `POST /api/ws-ticket` answer: a single-use ticket (256 random bits, base64url) for
/// opening the WebSocket, valid `expires_in` seconds.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ticket {
    pub ticket: String,
    #[schema(example = 30)]
    pub expires_in: u64,
}

/// `GET /ws` query.
#[derive(Deserialize)]
pub struct ConnectQuery {
    pub ticket: Option<String>,
}

/// `GET /ws?ticket=…`: upgrades to a WebSocket. 401 (before any upgrade) for a missing,
/// unknown, expired or already used ticket, or one whose session has ended or whose access
/// token has expired since; 429 with `Retry-After` when the user already has
/// `WS_MAX_SOCKETS_PER_USER` sockets open (on any instance).
pub async fn connect(
    state: web::Data<State>,
    live: web::Data<LiveState>,
    req: HttpRequest,
    body: web::Payload,
    query: Query<ConnectQuery>,
) -> Result<HttpResponse, ApiError> {
    let ticket = query
        .ticket
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("missing ticket: get one from POST /api/ws-ticket")
        })?;
    let conn = state.db.primary().await?;
    let row = conn
        .query_opt_t(
            "DELETE FROM messaging.ws_tickets WHERE ticket_hash = $1
             RETURNING user_id, session_id, expires_at > now() AS valid,
                       auth.session_active(session_id, user_id) AS active,
                       extract(epoch FROM token_expires_at)::float8 AS token_expires_at,
                       extract(epoch FROM token_expires_at - now())::float8 AS token_left,
                       (SELECT count(*) FROM messaging.presence_sockets s
                        WHERE s.user_id = ws_tickets.user_id) AS sockets",
            &[&ticket_hash(ticket)],
        )
        .await?;
    let Some(row) = row.filter(|r| r.get::<_, bool>("valid")) else {
        return Err(ApiError::unauthorized(
            "ticket is invalid, expired or already used",
        ));
    };
    let (user_id, session_id): (Uuid, Uuid) = (row.get("user_id"), row.get("session_id"));
    if !row.get::<_, bool>("active") || state.ended.contains(session_id) {
        return Err(ApiError::unauthorized("session has ended"));
    }
    let cap = state.cfg.ws_max_sockets_per_user;
    if row.get::<_, i64>("sockets") >= cap {
        return Err(ApiError::TooManyRequests {
            detail: format!("at most {cap} open sockets per user; close one first"),
            retry_after: 10,
        });
    }
    let token_left: f64 = row.get("token_left");
    if token_left <= 0.0 {
        return Err(ApiError::unauthorized(
            "the access token behind this ticket has expired; refresh and get a new ticket",
        ));
    }
    let token = TokenLife {
        expires_at: row.get::<_, f64>("token_expires_at") as i64,
        deadline: tokio::time::Instant::now() + Duration::from_secs_f64(token_left),
    };
    // Where each conversation's live delivery starts: the revision as of now. Anything
    // earlier is history (fetched over HTTP or replayed by `resume`).
    let synced: HashMap<Uuid, i64> = conn
        .query_t(
            "SELECT c.id, c.last_rev FROM messaging.participants p
             JOIN messaging.conversations c ON c.id = p.conversation_id
             WHERE p.user_id = $1 AND p.left_at IS NULL",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(conn);
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let caller = Caller {
        user_id,
        session_id,
        expires_at: token.expires_at,
    };
    tracing::info!(user.id = %user_id, "socket opened");
    let socket = Socket::new(
        (state.get_ref().clone(), live.get_ref().clone()),
        caller,
        session,
        synced,
        token,
    );
    // One span per socket session, a child of the upgrade request's: the session's own queries
    // (resume, typing, markers, catch-up) and each client frame's span fall inside it.
    let session_span = tracing::info_span!(
        "realtime.socket",
        otel.name = "WebSocket session",
        otel.kind = "internal",
        user.id = %user_id,
        switchboard.session.id = %session_id,
        switchboard.socket.close_code = tracing::field::Empty,
    );
    actix_web::rt::spawn(tracing::Instrument::instrument(
        socket.run(stream),
        session_span,
    ));
    Ok(response)
}
