//! The WebSocket protocol (DESIGN.md §4), defined once: [`ServerEvent`] names every server
//! frame, [`ClientFrame`] every client frame. README's WebSocket section describes the same.
//!
//! Server frames are JSON `{type, conversation_id?, seq?, rev?, data}`
//! ([`crate::messaging::model::ServerFrame`]). `seq` is the message's (or, for `read`, the
//! marker's); `rev` orders stored changes within a conversation (`message.*`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `type` of a server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ServerEvent {
    /// First frame on every socket: `{instance, user_id, session_id, ping_interval_secs,
    /// token_expires_at}`. The socket lives until `token_expires_at` (Unix seconds, the
    /// expiry of the access token behind its ticket) unless the client sends a fresh token
    /// (`{type:"auth"}`) before; otherwise it closes with 4003.
    #[serde(rename = "hello")]
    Hello,
    /// Answer to a client `ping`.
    #[serde(rename = "pong")]
    Pong,
    /// A fresh access token was accepted (answer to `{type:"auth"}`): the socket now lives
    /// until `{expires_at}` (Unix seconds).
    #[serde(rename = "auth.ok")]
    AuthOk,
    /// A client frame could not be handled: `{detail}`; the socket stays open.
    #[serde(rename = "error")]
    Error,
    /// A message (text, file or system) was appended: the message.
    #[serde(rename = "message.created")]
    MessageCreated,
    /// A message was edited: the message.
    #[serde(rename = "message.edited")]
    MessageEdited,
    /// A message was deleted: the tombstone.
    #[serde(rename = "message.deleted")]
    MessageDeleted,
    /// A participant's read marker moved: `{user_id, last_read_seq}`.
    #[serde(rename = "read")]
    Read,
    /// Someone is typing, or stopped, or their typing expired: `{user_id, is_typing,
    /// expires_in?}`.
    #[serde(rename = "typing")]
    Typing,
    /// Someone you share a conversation with went online or offline: `{user_id, online,
    /// last_seen_at}`.
    #[serde(rename = "presence")]
    Presence,
    /// People joined a conversation (or you were added to one): `{user_ids, conversation}`.
    #[serde(rename = "participant.added")]
    ParticipantAdded,
    /// People left or were removed (you too: then it is your last event of it): `{user_ids}`.
    #[serde(rename = "participant.removed")]
    ParticipantRemoved,
    /// A rename or role change: `{conversation}`.
    #[serde(rename = "conversation.updated")]
    ConversationUpdated,
    /// Your session ended (sign-out, refresh token reuse, revocation, password change,
    /// account deletion); the socket closes with 4001 next: `{session_id}`.
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    /// A `resume` of one conversation finished; live delivery goes on from here:
    /// `{last_seq}`, with `rev` the revision reached.
    #[serde(rename = "resumed")]
    Resumed,
    /// A `resume` cursor is too far behind to replay: fetch history over HTTP instead:
    /// `{detail}`.
    #[serde(rename = "resume.reload")]
    ResumeReload,
}

/// A frame from the client.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// `{type:"ping"}` → `pong`.
    Ping,
    /// `{type:"typing", conversation_id, is_typing}`: ephemeral, never stored; a `true`
    /// lasts `TYPING_TTL_SECS` unless refreshed.
    Typing {
        conversation_id: Uuid,
        is_typing: bool,
    },
    /// `{type:"read", conversation_id, seq}`: moves the read marker, like the HTTP endpoint.
    Read { conversation_id: Uuid, seq: i64 },
    /// `{type:"resume", cursors:{conversation_id: seq}}`: replay every stored change after
    /// each cursor (the last message `seq` the client has), then continue live. At most
    /// `WS_RESUMES_PER_MINUTE` per user and `RESUME_MAX_EVENTS_PER_FRAME` rows read in all;
    /// conversations past that budget are answered `resume.reload`.
    Resume { cursors: HashMap<Uuid, i64> },
    /// `{type:"auth", access_token}`: a fresh access token of the same user and session
    /// (after a refresh), so the socket outlives the token its ticket was issued for →
    /// `auth.ok {expires_at}`; anything else → `error`, and nothing changes.
    Auth { access_token: String },
}

/// A server frame as it travels (the documented shape of
/// [`crate::messaging::model::ServerFrame`]): `data` depends on `type`, as each
/// [`ServerEvent`] variant says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(title = "ServerFrame")]
pub struct WireServerFrame {
    #[serde(rename = "type")]
    pub kind: ServerEvent,
    /// The conversation it concerns (absent for `hello`, `pong`, `error`, `presence`,
    /// `session.revoked`).
    pub conversation_id: Option<Uuid>,
    /// The message's `seq` (`message.*`, membership events), or the read marker (`read`).
    pub seq: Option<i64>,
    /// The conversation revision of a stored change (`message.*`).
    pub rev: Option<i64>,
    /// The message for `message.*`; an object as listed under [`ServerEvent`] otherwise.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Most conversations one `resume` may name.
pub const MAX_RESUME_CONVERSATIONS: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_wire_names() -> serde_json::Result<()> {
        assert_eq!(
            serde_json::to_string(&ServerEvent::MessageCreated)?,
            "\"message.created\""
        );
        assert_eq!(
            serde_json::to_string(&ServerEvent::ResumeReload)?,
            "\"resume.reload\""
        );
        Ok(())
    }

    #[test]
    fn client_frames_parse_and_unknown_ones_do_not() {
        let id = Uuid::now_v7();
        let f: Result<ClientFrame, _> =
            serde_json::from_str(&format!(r#"{{"type":"resume","cursors":{{"{id}":3}}}}"#));
        assert!(matches!(f, Ok(ClientFrame::Resume { cursors }) if cursors.get(&id) == Some(&3)));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(
            r#"{"type":"read","conversation_id":"x","seq":1}"#
        )
        .is_err());
    }
}
