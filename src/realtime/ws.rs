//! The WebSocket endpoint (DESIGN.md §4): `POST /api/ws-ticket` issues a single-use ticket,
//! `GET /ws?ticket=…` redeems it and upgrades. One socket carries the events of all the
//! user's conversations.
//!
//! Client frames: `{type:"ping"}` → `{type:"pong"}`; `{type:"typing", conversation_id,
//! is_typing}` → a `typing` event to the other participants (ephemeral, never stored);
//! `{type:"read", conversation_id, seq}` → moves the read marker like the HTTP endpoint.
//! Anything else gets `{type:"error", data:{detail}}` and the socket stays open.

use std::time::{Duration, Instant};

use actix_web::{
    web::{self, Query},
    HttpRequest, HttpResponse,
};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::hub::{Command, Frame};
use crate::{
    error::ApiError,
    messaging::{
        caller::Caller,
        conversations::{mark_read, publish_frame},
        model::{is_participant, ServerFrame},
        State,
    },
};

/// Largest client frame, in bytes; a larger one closes the socket with 1009 (RFC 6455 §7.4.1).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Shortest gap between two typing events a socket may send; faster ones are dropped.
const TYPING_MIN_INTERVAL: Duration = Duration::from_millis(500);

fn ticket_hash(ticket: &str) -> Vec<u8> {
    Sha256::digest(ticket.as_bytes()).to_vec()
}

/// `POST /api/ws-ticket`: 200 `{ticket, expires_in}`; the ticket opens one socket, once,
/// within `expires_in` seconds, for the caller's user and session.
pub async fn ticket(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let bytes: [u8; 32] = rand::random();
    let ticket = URL_SAFE_NO_PAD.encode(bytes);
    let ttl = state.cfg.ws_ticket_ttl.as_secs_f64();
    let conn = state.db.primary().await?;
    conn.execute(
        "WITH expired AS (DELETE FROM messaging.ws_tickets WHERE expires_at < now() - interval '1 minute')
         INSERT INTO messaging.ws_tickets (ticket_hash, user_id, session_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        &[&ticket_hash(&ticket), &caller.user_id, &caller.session_id, &ttl],
    )
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "ticket": ticket,
            "expires_in": state.cfg.ws_ticket_ttl.as_secs(),
        })))
}

/// `GET /ws` query.
#[derive(Deserialize)]
pub struct ConnectQuery {
    pub ticket: Option<String>,
}

/// `GET /ws?ticket=…`: upgrades to a WebSocket. 401 (before any upgrade) for a missing,
/// unknown, expired or already used ticket.
pub async fn connect(
    state: web::Data<State>,
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
        .query_opt(
            "DELETE FROM messaging.ws_tickets WHERE ticket_hash = $1
             RETURNING user_id, session_id, expires_at > now() AS valid",
            &[&ticket_hash(ticket)],
        )
        .await?;
    drop(conn);
    let (user_id, session_id) = match row {
        Some(r) if r.get::<_, bool>("valid") => {
            (r.get::<_, Uuid>("user_id"), r.get::<_, Uuid>("session_id"))
        }
        _ => {
            return Err(ApiError::unauthorized(
                "ticket is invalid, expired or already used",
            ))
        }
    };
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let caller = Caller {
        user_id,
        session_id,
    };
    tracing::info!(user.id = %user_id, "socket opened");
    actix_web::rt::spawn(run_socket(state.get_ref().clone(), caller, session, stream));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Ping,
    Typing {
        conversation_id: Uuid,
        is_typing: bool,
    },
    Read {
        conversation_id: Uuid,
        seq: i64,
    },
}

fn close_reason(code: u16, text: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_owned()),
    })
}

fn error_frame(detail: &str) -> String {
    ServerFrame {
        kind: "error",
        conversation_id: None,
        seq: None,
        data: serde_json::json!({ "detail": detail }),
    }
    .to_json()
}

async fn run_socket(
    state: State,
    caller: Caller,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let (conn_id, mut frames, mut close_rx) = state.hub.register(caller.user_id, caller.session_id);
    let mut ping = tokio::time::interval(state.cfg.ws_ping_interval);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut last_typing: Option<Instant> = None;

    let reason = loop {
        tokio::select! {
            biased;
            changed = close_rx.changed() => {
                let wanted = *close_rx.borrow();
                match (changed, wanted) {
                    (Ok(()), Some((code, text))) => {
                        if code == 4001 {
                            let frame = ServerFrame {
                                kind: "session.revoked",
                                conversation_id: None,
                                seq: None,
                                data: serde_json::json!({"session_id": caller.session_id}),
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(1), session.text(frame.to_json())).await;
                        }
                        break close_reason(code, text);
                    }
                    (Ok(()), None) => continue,
                    (Err(_), _) => break close_reason(1011, "hub stopped"),
                }
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { break close_reason(1011, "hub stopped") };
                if !write(&mut session, &mut close_rx, frame).await {
                    break close_reason(1008, "slow consumer: reconnect and resume");
                }
            }
            msg = stream.recv() => {
                last_heard = Instant::now();
                match msg {
                    None => break None,
                    Some(Err(ProtocolError::Overflow)) => break close_reason(1009, "frame too large"),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket protocol error");
                        break close_reason(1002, "protocol error");
                    }
                    Some(Ok(AggregatedMessage::Close(_))) => break None,
                    Some(Ok(AggregatedMessage::Ping(b))) => {
                        if session.pong(&b).await.is_err() { break None; }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        if session.text(error_frame("binary frames are not supported; send JSON text")).await.is_err() { break None; }
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        let reply = handle_client_frame(&state, caller, &text, &mut last_typing).await;
                        if let Some(reply) = reply {
                            if session.text(reply).await.is_err() { break None; }
                        }
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > state.cfg.ws_idle_timeout {
                    break close_reason(1001, "heartbeat timeout");
                }
                if session.ping(b"").await.is_err() { break None; }
            }
        }
    };
    state.hub.send(Command::Unregister {
        id: conn_id,
        user_id: caller.user_id,
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(reason)).await;
    tracing::info!(user.id = %caller.user_id, "socket closed");
}

/// Writes a frame unless the hub asks for the socket to close first (a client that does not
/// read blocks the write). Returns false if the socket must close.
async fn write(
    session: &mut Session,
    close_rx: &mut tokio::sync::watch::Receiver<super::hub::CloseReason>,
    frame: Frame,
) -> bool {
    tokio::select! {
        r = session.text(frame.to_string()) => r.is_ok(),
        _ = close_rx.changed() => false,
    }
}

async fn handle_client_frame(
    state: &State,
    caller: Caller,
    text: &str,
    last_typing: &mut Option<Instant>,
) -> Option<String> {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            return Some(error_frame(&format!(
                "unreadable frame ({e}); expected type ping, typing or read"
            )))
        }
    };
    match frame {
        ClientFrame::Ping => Some(
            ServerFrame {
                kind: "pong",
                conversation_id: None,
                seq: None,
                data: serde_json::json!({}),
            }
            .to_json(),
        ),
        ClientFrame::Typing {
            conversation_id,
            is_typing,
        } => {
            if last_typing.is_some_and(|t| t.elapsed() < TYPING_MIN_INTERVAL) {
                return None;
            }
            *last_typing = Some(Instant::now());
            let member = match state.db.read(None).await {
                Ok((conn, _)) => is_participant(&conn, conversation_id, caller.user_id).await,
                Err(_) => return Some(error_frame("service unavailable; try again")),
            };
            match member {
                Ok(true) => {
                    let frame = ServerFrame {
                        kind: "typing",
                        conversation_id: Some(conversation_id),
                        seq: None,
                        data: serde_json::json!({"user_id": caller.user_id, "is_typing": is_typing}),
                    };
                    publish_frame(
                        state,
                        conversation_id,
                        Some(caller.user_id),
                        frame.to_json(),
                    );
                    None
                }
                Ok(false) => Some(error_frame("conversation not found")),
                Err(_) => Some(error_frame("service unavailable; try again")),
            }
        }
        ClientFrame::Read {
            conversation_id,
            seq,
        } => {
            if seq < 0 {
                return Some(error_frame("seq must be zero or more"));
            }
            let conn = match state.db.primary().await {
                Ok(c) => c,
                Err(_) => return Some(error_frame("service unavailable; try again")),
            };
            match mark_read(state, &conn, conversation_id, caller.user_id, seq).await {
                Ok(_) => None,
                Err(ApiError::NotFound(_)) => Some(error_frame("conversation not found")),
                Err(_) => Some(error_frame("service unavailable; try again")),
            }
        }
    }
}
