//! The WebSocket endpoint (DESIGN.md §4): `POST /api/ws-ticket` issues a single-use ticket,
//! `GET /ws?ticket=…` redeems it and upgrades. One socket carries the events of all the
//! user's conversations; the frames are defined in [`super::protocol`].
//!
//! Delivery is gapless and in order per conversation: every stored change carries the
//! conversation's revision (`rev`); each socket remembers the last revision it delivered per
//! conversation, drops anything not newer, and when a revision is skipped (a notification
//! lost or reordered between instances) fetches what it missed from the primary before going
//! on. `resume` replays from a client's cursors the same way, inside one repeatable-read
//! snapshot, so events committed while it runs are neither lost nor doubled.

use crate::db::Traced;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actix_web::{
    web::{self, Query},
    HttpRequest, HttpResponse,
};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    hub::{self, Command, Frame, Outbound},
    protocol::{ClientFrame, ServerEvent, MAX_RESUME_CONVERSATIONS},
};
use crate::{
    error::ApiError,
    messaging::{
        budget::{self, Budget},
        caller::Caller,
        conversations::{mark_read, publish_frame},
        messages::message_frame,
        model::{
            is_participant, message_from_seen_from, scope, Message, ServerFrame, MESSAGE_COLUMNS,
        },
        State,
    },
};

/// Largest client frame, in bytes; a larger one closes the socket with 1009 (RFC 6455 §7.4.1).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// A refreshed `typing: true` is re-announced at most this often.
const TYPING_REANNOUNCE: Duration = Duration::from_secs(2);

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
    let socket = Socket::new(state.get_ref().clone(), caller, session, synced, token);
    actix_web::rt::spawn(socket.run(stream));
    Ok(response)
}

fn close_reason(code: u16, text: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_owned()),
    })
}

/// `resume.reload` for a conversation with more than `max` changes to replay.
fn reload_frame(conversation_id: Uuid, max: i64) -> String {
    ServerFrame::new(
        ServerEvent::ResumeReload,
        Some(conversation_id),
        None,
        json!({"detail": format!(
            "more than {max} changes to replay; fetch history over HTTP and resume from its newest seq"
        )}),
    )
    .to_json()
}

fn error_frame(detail: &str) -> String {
    ServerFrame::new(ServerEvent::Error, None, None, json!({ "detail": detail })).to_json()
}

/// When the access token behind a socket expires: as Unix seconds (told to the client) and
/// as the instant the socket closes unless a fresh token arrives.
#[derive(Debug, Clone, Copy)]
struct TokenLife {
    expires_at: i64,
    deadline: tokio::time::Instant,
}

/// Why the socket loop ended.
enum End {
    /// The client closed or vanished: nothing to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// One socket's task state.
struct Socket {
    state: State,
    caller: Caller,
    session: Session,
    close_rx: watch::Receiver<hub::CloseReason>,
    conn_id: u64,
    frames: tokio::sync::mpsc::Receiver<Outbound>,
    /// Last revision delivered per conversation.
    synced: HashMap<Uuid, i64>,
    /// Conversations this socket is typing in: when the state expires, and when it was last
    /// announced.
    typing: HashMap<Uuid, (Instant, Instant)>,
    /// Client frames in the current one-second window.
    window: (Instant, u32),
    /// The access token the socket lives on.
    token: TokenLife,
    /// Set when the socket itself decides to close (not the hub): code and reason.
    ending: hub::CloseReason,
}

impl Socket {
    fn new(
        state: State,
        caller: Caller,
        session: Session,
        synced: HashMap<Uuid, i64>,
        token: TokenLife,
    ) -> Self {
        let (conn_id, frames, close_rx) = state.hub.register(caller.user_id, caller.session_id);
        Self {
            state,
            caller,
            session,
            close_rx,
            conn_id,
            frames,
            synced,
            typing: HashMap::new(),
            window: (Instant::now(), 0),
            token,
            ending: None,
        }
    }

    async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        // The session may have ended between the ticket's check and the hub registration
        // (its CloseSession then found nothing to close): look again now that it would.
        if self.state.ended.contains(self.caller.session_id) {
            self.ending = Some(hub::SESSION_REVOKED);
        }
        self.state
            .presence
            .connected(self.caller.user_id, self.conn_id)
            .await;
        let hello = ServerFrame::new(
            ServerEvent::Hello,
            None,
            None,
            json!({
                "instance": self.state.presence.instance(),
                "user_id": self.caller.user_id,
                "session_id": self.caller.session_id,
                "ping_interval_secs": self.state.cfg.ws_ping_interval.as_secs(),
                "token_expires_at": self.token.expires_at,
            }),
        );
        let end = if self.send(hello.to_json()).await {
            self.serve(&mut stream).await
        } else {
            self.closing().await
        };
        for conversation_id in self.typing.keys().copied().collect::<Vec<_>>() {
            self.announce_typing(conversation_id, false);
        }
        self.state.hub.send(Command::Unregister {
            id: self.conn_id,
            user_id: self.caller.user_id,
        });
        self.state
            .presence
            .disconnected(self.caller.user_id, self.conn_id);
        let reason = match end {
            End::Gone => None,
            End::Close(code, text) => close_reason(code, text),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.session.close(reason)).await;
        tracing::info!(user.id = %self.caller.user_id, "socket closed");
    }

    async fn serve(&mut self, stream: &mut actix_ws::AggregatedMessageStream) -> End {
        let mut ping = tokio::time::interval(self.state.cfg.ws_ping_interval);
        ping.tick().await;
        let mut last_heard = Instant::now();
        loop {
            let typing_due = self.typing.values().map(|t| t.0).min();
            tokio::select! {
                biased;
                changed = self.close_rx.changed() => {
                    if changed.is_err() {
                        return End::Close(1011, "hub stopped");
                    }
                    if self.close_rx.borrow().is_some() {
                        return self.closing().await;
                    }
                }
                // Before any frame: a busy socket closes on time too.
                _ = tokio::time::sleep_until(self.token.deadline) => {
                    tracing::info!(user.id = %self.caller.user_id, "access token expired; closing socket");
                    return End::Close(hub::TOKEN_EXPIRED.0, hub::TOKEN_EXPIRED.1);
                }
                out = self.frames.recv() => {
                    let ok = match out {
                        None => return End::Close(1011, "hub stopped"),
                        Some(Outbound::Frame(frame)) => self.deliver(frame).await,
                        Some(Outbound::Resync) => self.resync().await,
                        Some(Outbound::Left(conversation_id)) => {
                            self.left(conversation_id);
                            true
                        }
                    };
                    if !ok {
                        return self.closing().await;
                    }
                }
                msg = stream.recv() => {
                    last_heard = Instant::now();
                    match msg {
                        None | Some(Ok(AggregatedMessage::Close(_))) => return End::Gone,
                        Some(Err(ProtocolError::Overflow)) => return End::Close(1009, "frame too large"),
                        // A message split into fragments that add up past the limit: actix-ws
                        // reports it only as this I/O error (aggregated.rs), still a 1009.
                        Some(Err(ProtocolError::Io(e))) if e.to_string().contains("continuation size") => {
                            return End::Close(1009, "frame too large");
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "WebSocket protocol error");
                            return End::Close(1002, "protocol error");
                        }
                        Some(Ok(AggregatedMessage::Ping(b))) => {
                            if self.session.pong(&b).await.is_err() {
                                return End::Gone;
                            }
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            if !self.send(error_frame("binary frames are not supported; send JSON text")).await {
                                return self.closing().await;
                            }
                        }
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            if !self.count_frame() {
                                return End::Close(1008, "too many frames: slow down");
                            }
                            if !self.client_frame(&text).await {
                                return self.closing().await;
                            }
                        }
                    }
                }
                _ = sleep_until(typing_due) => self.expire_typing(),
                _ = ping.tick() => {
                    if last_heard.elapsed() > self.state.cfg.ws_idle_timeout {
                        return End::Close(1001, "heartbeat timeout");
                    }
                    if self.session.ping(b"").await.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    /// Writes a frame unless the hub asks for the socket to close first (a client that does
    /// not read blocks the write). Returns false if the socket must close; then
    /// [`Self::closing`] says how.
    async fn send(&mut self, text: String) -> bool {
        if self.close_rx.borrow().is_some() || self.ending.is_some() {
            return false;
        }
        tokio::select! {
            biased;
            r = self.session.text(text) => r.is_ok(),
            _ = self.close_rx.changed() => false,
        }
    }

    /// How the socket ends once it must: as the hub asked (after a `session.revoked` frame
    /// when the session ended), or quietly when the client is gone.
    async fn closing(&mut self) -> End {
        let wanted = self.ending.or(*self.close_rx.borrow());
        match wanted {
            Some(reason) => {
                if reason == hub::SESSION_REVOKED {
                    let frame = ServerFrame::new(
                        ServerEvent::SessionRevoked,
                        None,
                        None,
                        json!({"session_id": self.caller.session_id}),
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        self.session.text(frame.to_json()),
                    )
                    .await;
                }
                End::Close(reason.0, reason.1)
            }
            None => End::Gone,
        }
    }

    /// Delivers a live frame; stored changes only in revision order, once, catching up from
    /// the database over any revision skipped.
    async fn deliver(&mut self, frame: Frame) -> bool {
        if let (Some(m), Some(at)) = (crate::metrics::metrics(), frame.committed_us) {
            let delay = chrono::Utc::now().timestamp_micros() - at;
            m.fanout_delay.observe(delay.max(0) as f64 / 1e6);
        }
        let Some((conversation_id, rev)) = frame.at else {
            return self.send(frame.text.to_string()).await;
        };
        match self.synced.get(&conversation_id).copied() {
            // First change seen in a conversation joined since the socket opened.
            None => {
                self.synced.insert(conversation_id, rev);
                self.send(frame.text.to_string()).await
            }
            Some(last) if rev <= last => true,
            Some(last) if rev == last + 1 => {
                self.synced.insert(conversation_id, rev);
                self.send(frame.text.to_string()).await
            }
            Some(last) => {
                tracing::debug!(conversation.id = %conversation_id, last, rev, "revision gap; catching up");
                match self
                    .catch_up(
                        conversation_id,
                        last,
                        None,
                        self.state.cfg.resume_max_events,
                    )
                    .await
                {
                    Ok((keep, _)) => keep,
                    Err(e) => {
                        tracing::warn!(error = %e, "catch-up failed; delivering live");
                        self.synced.insert(conversation_id, rev);
                        self.send(frame.text.to_string()).await
                    }
                }
            }
        }
    }

    /// After the LISTEN connection came back: catch up every conversation this socket follows.
    async fn resync(&mut self) -> bool {
        let convs: Vec<(Uuid, i64)> = self.synced.iter().map(|(c, r)| (*c, *r)).collect();
        for (conversation_id, last) in convs {
            match self
                .catch_up(
                    conversation_id,
                    last,
                    None,
                    self.state.cfg.resume_max_events,
                )
                .await
            {
                Ok((true, _)) => {}
                Ok((false, _)) => return false,
                Err(e) => tracing::warn!(error = %e, "resync failed"),
            }
        }
        true
    }

    /// Sends every change after revision `after_rev` that the user can see, in revision
    /// order — `message.created` for messages appended after it, `message.edited` or
    /// `message.deleted` (current state) for older ones — from one repeatable-read snapshot
    /// of the primary, then remembers the snapshot's revision. With `resume_seq`, ends with a
    /// `resumed` frame, or answers `resume.reload` when there are more than `max` changes.
    /// Returns whether the socket stays open, and how many rows it read.
    async fn catch_up(
        &mut self,
        conversation_id: Uuid,
        after_rev: i64,
        resume_seq: Option<i64>,
        max: i64,
    ) -> anyhow::Result<(bool, i64)> {
        let mut conn = self.state.db.primary().await?;
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let Some(scope) = scope(&tx, conversation_id, self.caller.user_id).await? else {
            self.synced.remove(&conversation_id);
            return Ok((true, 0));
        };
        // A former participant's replay ends at their departure: no later change (an edit of
        // an older message included) and no later revision number.
        let head = tx
            .query_one_t(
                "SELECT coalesce((SELECT d.created_rev FROM messaging.messages d
                                  WHERE d.conversation_id = c.id AND d.seq = $2),
                                 c.last_rev),
                        c.last_seq
                 FROM messaging.conversations c WHERE c.id = $1",
                &[&conversation_id, &scope.visible_to_seq],
            )
            .await?;
        let (last_rev, last_seq): (i64, i64) = (head.get(0), head.get(1));
        let rows = tx
            .query_t(
                &format!(
                    "SELECT {MESSAGE_COLUMNS}, m.created_rev FROM {seen}
                     WHERE m.conversation_id = $1 AND m.rev > $2 AND m.rev <= $6
                       AND m.seq >= $3 AND ($4::bigint IS NULL OR m.seq <= $4)
                     ORDER BY m.rev
                     LIMIT $5",
                    seen = message_from_seen_from("$3"),
                ),
                &[
                    &conversation_id,
                    &after_rev,
                    &scope.visible_from_seq,
                    &scope.visible_to_seq,
                    &(max + 1),
                    &last_rev,
                ],
            )
            .await?;
        tx.commit().await?;
        drop(conn);
        self.synced.insert(conversation_id, last_rev);
        if rows.len() as i64 > max {
            let read = rows.len() as i64;
            return Ok((self.send(reload_frame(conversation_id, max)).await, read));
        }
        for row in &rows {
            let message = Message::from_row(row);
            let created_rev: i64 = row.get("created_rev");
            let kind = if created_rev > after_rev {
                ServerEvent::MessageCreated
            } else if message.deleted {
                ServerEvent::MessageDeleted
            } else {
                ServerEvent::MessageEdited
            };
            if !self.send(message_frame(kind, &message)).await {
                return Ok((false, rows.len() as i64));
            }
        }
        let sent = rows.len() as i64;
        if resume_seq.is_some() {
            let visible_last = scope.visible_to_seq.unwrap_or(last_seq);
            let frame = ServerFrame {
                kind: ServerEvent::Resumed,
                conversation_id: Some(conversation_id),
                seq: Some(visible_last),
                rev: Some(last_rev),
                data: json!({"last_seq": visible_last}),
            };
            return Ok((self.send(frame.to_json()).await, sent));
        }
        Ok((true, sent))
    }

    /// `resume`: replays each conversation from its cursor (the last message `seq` the client
    /// has; 0 for none). Bounded work: `WS_RESUMES_PER_MINUTE` frames per user (across
    /// sockets and instances), and `RESUME_MAX_EVENTS_PER_FRAME` rows read in all (the
    /// conversations past that budget are answered `resume.reload` without being read).
    async fn resume(&mut self, cursors: HashMap<Uuid, i64>) -> bool {
        let per_minute = self.state.cfg.ws_resumes_per_minute;
        let spent = match self.state.db.primary().await {
            Ok(conn) => {
                budget::spend(
                    &conn,
                    self.caller.user_id,
                    Budget::Resume,
                    1,
                    i64::from(per_minute),
                    Duration::from_secs(60),
                    || {
                        format!(
                            "at most {per_minute} resume frames per minute; wait, or fetch history over HTTP"
                        )
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        match spent {
            Ok(()) => {}
            Err(ApiError::TooManyRequests { detail, .. }) => {
                return self.send(error_frame(&detail)).await
            }
            Err(_) => return self.send(error_frame("resume failed; try again")).await,
        }
        if cursors.len() > MAX_RESUME_CONVERSATIONS {
            return self
                .send(error_frame(&format!(
                    "resume names at most {MAX_RESUME_CONVERSATIONS} conversations"
                )))
                .await;
        }
        let mut budget = self.state.cfg.resume_max_events_per_frame;
        for (conversation_id, seq) in cursors {
            let base = self.cursor_rev(conversation_id, seq).await;
            let max = budget.min(self.state.cfg.resume_max_events).max(0);
            let ok = match base {
                // The frame's budget is spent: no more reading, the rest reload over HTTP.
                Ok(Ok(_)) if max == 0 => self.send(reload_frame(conversation_id, 0)).await,
                Ok(Ok(rev)) => match self.catch_up(conversation_id, rev, Some(seq), max).await {
                    Ok((ok, read)) => {
                        budget -= read;
                        ok
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resume failed");
                        self.send(error_frame("resume failed; try again")).await
                    }
                },
                Ok(Err(detail)) => {
                    let frame = ServerFrame::new(
                        ServerEvent::Error,
                        Some(conversation_id),
                        None,
                        json!({"detail": detail}),
                    );
                    self.send(frame.to_json()).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resume failed");
                    self.send(error_frame("resume failed; try again")).await
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// The revision at which message `seq` was appended (0 for seq 0), or why the cursor is
    /// refused.
    async fn cursor_rev(
        &self,
        conversation_id: Uuid,
        seq: i64,
    ) -> anyhow::Result<Result<i64, &'static str>> {
        if seq < 0 {
            return Ok(Err("a resume cursor is a seq, zero or more"));
        }
        let conn = self.state.db.primary().await?;
        if scope(&conn, conversation_id, self.caller.user_id)
            .await?
            .is_none()
        {
            return Ok(Err("conversation not found"));
        }
        if seq == 0 {
            return Ok(Ok(0));
        }
        let row = conn
            .query_opt_t(
                "SELECT created_rev FROM messaging.messages WHERE conversation_id = $1 AND seq = $2",
                &[&conversation_id, &seq],
            )
            .await?;
        Ok(row
            .map(|r| r.get(0))
            .ok_or("the cursor is past the conversation's last seq"))
    }

    /// Counts a client frame; false once the per-second budget is spent.
    fn count_frame(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        self.window.1 <= self.state.cfg.ws_max_frames_per_sec
    }

    /// Handles one client frame; false if the socket must close.
    async fn client_frame(&mut self, text: &str) -> bool {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .send(error_frame(&format!(
                        "unreadable frame ({e}); expected type ping, typing, read, resume or auth"
                    )))
                    .await
            }
        };
        match frame {
            ClientFrame::Ping => {
                self.send(ServerFrame::new(ServerEvent::Pong, None, None, json!({})).to_json())
                    .await
            }
            ClientFrame::Typing {
                conversation_id,
                is_typing,
            } => match self.typing(conversation_id, is_typing).await {
                Ok(()) => true,
                Err(detail) => self.send(error_frame(detail)).await,
            },
            ClientFrame::Read {
                conversation_id,
                seq,
            } => {
                if seq < 0 {
                    return self.send(error_frame("seq must be zero or more")).await;
                }
                let result = match self.state.db.primary().await {
                    Ok(conn) => {
                        mark_read(
                            &self.state,
                            &conn,
                            conversation_id,
                            self.caller.user_id,
                            seq,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => true,
                    Err(ApiError::NotFound(_)) => {
                        self.send(error_frame("conversation not found")).await
                    }
                    Err(_) => {
                        self.send(error_frame("service unavailable; try again"))
                            .await
                    }
                }
            }
            ClientFrame::Resume { cursors } => self.resume(cursors).await,
            ClientFrame::Auth { access_token } => self.reauthenticate(&access_token).await,
        }
    }

    /// `{type:"auth", access_token}`: a fresh token of the same user and session, whose
    /// session is still active, moves the socket's deadline to its expiry (`auth.ok`). A
    /// token of anyone or anything else changes nothing (`error`); a session found ended
    /// closes the socket as revoked. Returns false if the socket must close.
    async fn reauthenticate(&mut self, token: &str) -> bool {
        let claims = match self.state.verifier.verify(token).await {
            Ok(c) => c,
            Err(e) => return self.send(error_frame(&e.to_string())).await,
        };
        if !self.state.ended.covers(claims.iat, claims.exp) {
            return self
                .send(error_frame(
                    "access token lives longer than ended sessions are remembered",
                ))
                .await;
        }
        if claims.sub != self.caller.user_id || claims.sid != self.caller.session_id {
            return self
                .send(error_frame(
                    "the token belongs to another session; open a new socket for it",
                ))
                .await;
        }
        let active = match self.state.db.primary().await {
            Ok(conn) => conn
                .query_one_t(
                    "SELECT auth.session_active($1, $2)",
                    &[&self.caller.session_id, &self.caller.user_id],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match active {
            Ok(true) if !self.state.ended.contains(claims.sid) => {}
            Ok(_) => {
                self.ending = Some(hub::SESSION_REVOKED);
                return false;
            }
            Err(_) => {
                return self
                    .send(error_frame("service unavailable; try again"))
                    .await
            }
        }
        if claims.exp > self.token.expires_at {
            let left = (claims.exp - chrono::Utc::now().timestamp()).max(0) as u64;
            self.token = TokenLife {
                expires_at: claims.exp,
                deadline: tokio::time::Instant::now() + Duration::from_secs(left),
            };
        }
        let frame = ServerFrame::new(
            ServerEvent::AuthOk,
            None,
            None,
            json!({"expires_at": self.token.expires_at}),
        );
        self.send(frame.to_json()).await
    }

    /// The caller's membership of `conversation_id` ended: their typing there stops now
    /// (announced to the members, so it clears at once), and the socket follows the
    /// conversation no more.
    fn left(&mut self, conversation_id: Uuid) {
        if self.typing.remove(&conversation_id).is_some() {
            self.announce_typing(conversation_id, false);
        }
        self.synced.remove(&conversation_id);
    }

    /// Typing: ephemeral and never stored. `true` is announced, then re-announced at most
    /// every couple of seconds while refreshed; it expires `TYPING_TTL_SECS` after the last
    /// refresh (announced as `is_typing: false`), as does an explicit `false`. Every
    /// announcement of `true` is checked against current membership on the primary, so a
    /// removed member's typing reaches nobody (and their removal drops it at once, see
    /// [`Self::left`]).
    async fn typing(&mut self, conversation_id: Uuid, is_typing: bool) -> Result<(), &'static str> {
        let now = Instant::now();
        if !is_typing {
            if self.typing.remove(&conversation_id).is_some() {
                self.announce_typing(conversation_id, false);
            }
            return Ok(());
        }
        let ttl = self.state.cfg.typing_ttl;
        if let Some(state) = self.typing.get_mut(&conversation_id) {
            state.0 = now + ttl;
            if now.duration_since(state.1) < TYPING_REANNOUNCE {
                return Ok(());
            }
        }
        let member = match self.state.db.primary().await {
            Ok(conn) => is_participant(&conn, conversation_id, self.caller.user_id).await,
            Err(_) => return Err("service unavailable; try again"),
        };
        match member {
            Ok(true) => {
                self.typing.insert(conversation_id, (now + ttl, now));
                self.announce_typing(conversation_id, true);
                Ok(())
            }
            Ok(false) => {
                self.typing.remove(&conversation_id);
                Err("conversation not found")
            }
            Err(_) => Err("service unavailable; try again"),
        }
    }

    fn expire_typing(&mut self) {
        let now = Instant::now();
        let expired: Vec<Uuid> = self
            .typing
            .iter()
            .filter(|(_, t)| t.0 <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            self.typing.remove(&c);
            self.announce_typing(c, false);
        }
    }

    fn announce_typing(&self, conversation_id: Uuid, is_typing: bool) {
        let mut data = json!({"user_id": self.caller.user_id, "is_typing": is_typing});
        if is_typing {
            data["expires_in"] = json!(self.state.cfg.typing_ttl.as_secs_f64());
        }
        let frame = ServerFrame::new(ServerEvent::Typing, Some(conversation_id), None, data);
        publish_frame(
            &self.state,
            conversation_id,
            Some(self.caller.user_id),
            frame.to_json(),
        );
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
