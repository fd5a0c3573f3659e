//! One WebSocket's task (DESIGN.md §4): the socket loop — hub frames, client frames,
//! heartbeats, the access token's deadline — and how it ends. Ordered delivery and resume
//! are in [`delivery`], typing in [`typing`]; the frames are defined in [`crate::messaging::protocol`].

mod delivery;
mod typing;

use crate::platform::db::{DbError, Traced};
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    hub::{self, Command, Outbound},
    LiveState,
};
use crate::{
    messaging::{
        caller::Caller,
        conversations::mark_read,
        delivered::mark_delivered,
        protocol::{AuthOk, ClientFrame, Detail, Empty, Event, Hello, ServerFrame, SessionEnded},
        State,
    },
    platform::error::ApiError,
};

/// Largest client frame, in bytes; a larger one closes the socket with 1009 (RFC 6455 §7.4.1).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

fn close_reason(code: u16, text: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_owned()),
    })
}

fn error_frame(detail: &str) -> String {
    ServerFrame::new(Event::Error(Detail {
        detail: detail.to_owned(),
    }))
    .to_json()
}

/// When the access token behind a socket expires: as Unix seconds (told to the client) and
/// as the instant the socket closes unless a fresh token arrives.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenLife {
    pub(super) expires_at: i64,
    pub(super) deadline: tokio::time::Instant,
}

/// Why the socket loop ended.
enum End {
    /// The client closed or vanished: nothing to send.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// One socket's task state.
pub(super) struct Socket {
    state: State,
    live: LiveState,
    caller: Caller,
    session: Session,
    close_rx: watch::Receiver<hub::CloseReason>,
    conn_id: u64,
    frames: tokio::sync::mpsc::Receiver<Outbound>,
    /// Last revision delivered per conversation.
    synced: HashMap<Uuid, i64>,
    /// Conversations this socket is typing in: when the state expires, and when it was last
    /// announced.
    typing: HashMap<Uuid, typing::TypingState>,
    /// Client frames in the current one-second window.
    window: (Instant, u32),
    /// The access token the socket lives on.
    token: TokenLife,
    /// Set when the socket itself decides to close (not the hub): code and reason.
    ending: hub::CloseReason,
}

impl Socket {
    pub(super) fn new(
        (state, live): (State, LiveState),
        caller: Caller,
        session: Session,
        synced: HashMap<Uuid, i64>,
        token: TokenLife,
    ) -> Self {
        let (conn_id, frames, close_rx) = live.hub.register(caller.user_id, caller.session_id);
        Self {
            state,
            live,
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

    pub(super) async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) {
        // The session may have ended between the ticket's check and the hub registration
        // (its CloseSession then found nothing to close): look again now that it would.
        if self.state.ended.contains(self.caller.session_id) {
            self.ending = Some(hub::SESSION_REVOKED);
        }
        self.live
            .presence
            .connected(self.caller.user_id, self.conn_id)
            .await;
        let hello = ServerFrame::new(Event::Hello(Hello {
            instance: self.live.presence.instance().to_owned(),
            user_id: self.caller.user_id,
            session_id: self.caller.session_id,
            ping_interval_secs: self.state.cfg.ws_ping_interval.as_secs(),
            token_expires_at: self.token.expires_at,
        }));
        let end = if self.send(hello.to_json()).await {
            self.serve(&mut stream).await
        } else {
            self.closing().await
        };
        for (conversation_id, t) in std::mem::take(&mut self.typing) {
            self.announce_typing(conversation_id, false, t.hidden);
        }
        self.live.hub.send(Command::Unregister {
            id: self.conn_id,
            user_id: self.caller.user_id,
        });
        self.live
            .presence
            .disconnected(self.caller.user_id, self.conn_id);
        let reason = match end {
            End::Gone => None,
            End::Close(code, text) => {
                tracing::Span::current().record("switchboard.socket.close_code", code);
                close_reason(code, text)
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.session.close(reason)).await;
        tracing::info!(user.id = %self.caller.user_id, "socket closed");
    }

    async fn serve(&mut self, stream: &mut actix_ws::AggregatedMessageStream) -> End {
        let mut ping = tokio::time::interval(self.state.cfg.ws_ping_interval);
        ping.tick().await;
        let mut last_heard = Instant::now();
        loop {
            let typing_due = self.typing.values().map(|t| t.until).min();
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
                    let frame = ServerFrame::new(Event::SessionRevoked(SessionEnded {
                        session_id: self.caller.session_id,
                    }));
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
                        "unreadable frame ({e}); expected type ping, typing, read, delivered, resume or auth"
                    )))
                    .await
            }
        };
        let kind = match &frame {
            ClientFrame::Ping => "ping",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Delivered { .. } => "delivered",
            ClientFrame::Resume { .. } => "resume",
            ClientFrame::Auth { .. } => "auth",
        };
        // Each client frame is a span inside the session's, holding the queries it runs.
        let span = tracing::info_span!(
            "realtime.client_frame",
            otel.name = %format!("WebSocket {kind}"),
            otel.kind = "server",
            switchboard.frame.type = kind,
        );
        tracing::Instrument::instrument(self.handle(frame), span).await
    }

    async fn handle(&mut self, frame: ClientFrame) -> bool {
        match frame {
            ClientFrame::Ping => {
                self.send(ServerFrame::new(Event::Pong(Empty {})).to_json())
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
            } => self.move_marker(conversation_id, seq, false).await,
            ClientFrame::Delivered {
                conversation_id,
                seq,
            } => self.move_marker(conversation_id, seq, true).await,
            ClientFrame::Resume { cursors } => self.resume(cursors).await,
            ClientFrame::Auth { access_token } => self.reauthenticate(&access_token).await,
        }
    }

    /// `read` and `delivered`: moves the caller's read (or delivered) marker, as the HTTP
    /// endpoints do; an `error` frame when it cannot. Returns false if the socket must close.
    async fn move_marker(&mut self, conversation_id: Uuid, seq: i64, delivered: bool) -> bool {
        if seq < 0 {
            return self.send(error_frame("seq must be zero or more")).await;
        }
        let user = self.caller.user_id;
        let result = match self.state.db.primary().await {
            Ok(conn) if delivered => mark_delivered(&self.state, &conn, conversation_id, user, seq)
                .await
                .map(|_| ()),
            Ok(conn) => mark_read(&self.state, &conn, conversation_id, user, seq)
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(()) => true,
            Err(ApiError::NotFound(_)) => self.send(error_frame("conversation not found")).await,
            Err(_) => {
                self.send(error_frame("service unavailable; try again"))
                    .await
            }
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
                .map_err(DbError::from),
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
        let frame = ServerFrame::new(Event::AuthOk(AuthOk {
            expires_at: self.token.expires_at,
        }));
        self.send(frame.to_json()).await
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
