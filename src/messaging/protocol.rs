//! The WebSocket protocol (DESIGN.md §4), defined once: [`Event`] is every server event with
//! its typed payload, [`ServerFrame`] the frame that carries it, [`ClientFrame`] every client
//! frame. The AsyncAPI document is generated from these types, and README's WebSocket
//! section describes the same.
//!
//! Server frames are JSON `{type, data, conversation_id?, seq?, rev?}`. `seq` is the
//! message's (or, for `read`, the marker's); `rev` orders stored changes within a
//! conversation (`message.*`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{Conversation, Message};

/// One server event: its `type` and its typed `data` (adjacently tagged).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// First frame on every socket. The socket lives until `token_expires_at` unless the
    /// client sends a fresh token (`{type:"auth"}`); otherwise it closes with 4003.
    #[serde(rename = "hello")]
    Hello(Hello),
    /// Answer to a client `ping`.
    #[serde(rename = "pong")]
    Pong(Empty),
    /// A fresh access token was accepted (answer to `{type:"auth"}`).
    #[serde(rename = "auth.ok")]
    AuthOk(AuthOk),
    /// A client frame could not be handled; the socket stays open.
    #[serde(rename = "error")]
    Error(Detail),
    /// A message (text, file or system) was appended.
    #[serde(rename = "message.created")]
    MessageCreated(Message),
    /// A message was edited.
    #[serde(rename = "message.edited")]
    MessageEdited(Message),
    /// A message was deleted: the tombstone.
    #[serde(rename = "message.deleted")]
    MessageDeleted(Message),
    /// Someone reacted to a message (`seq`/`rev` are the message's and the change's).
    #[serde(rename = "reaction.added")]
    ReactionAdded(crate::messaging::reactions::ReactionChanged),
    /// Someone took a reaction back.
    #[serde(rename = "reaction.removed")]
    ReactionRemoved(crate::messaging::reactions::ReactionChanged),
    /// A message was pinned to the conversation: the message, with `pinned`.
    #[serde(rename = "message.pinned")]
    MessagePinned(Message),
    /// A message was unpinned.
    #[serde(rename = "message.unpinned")]
    MessageUnpinned(Message),
    /// You marked a conversation unread (on another device): sent to your own sockets only.
    #[serde(rename = "conversation.unread")]
    ConversationUnread(crate::messaging::conversations::ReadMarker),
    /// A participant's delivered marker moved (their read marker carries it too: take the
    /// larger of the two).
    #[serde(rename = "delivered")]
    Delivered(crate::messaging::delivered::DeliveredMoved),
    /// A thread's root has a new reply: its summary now (`seq` is the root's).
    #[serde(rename = "thread.updated")]
    ThreadUpdated(crate::messaging::threads::ThreadUpdated),
    /// A participant's read marker moved.
    #[serde(rename = "read")]
    Read(ReadMoved),
    /// Someone is typing, or stopped, or their typing expired.
    #[serde(rename = "typing")]
    Typing(Typing),
    /// Someone you share a conversation with went online or offline.
    #[serde(rename = "presence")]
    Presence(PresenceChanged),
    /// People joined a conversation (or you were added to one).
    #[serde(rename = "participant.added")]
    ParticipantAdded(ParticipantsAdded),
    /// People left or were removed (you too: then it is your last event of it).
    #[serde(rename = "participant.removed")]
    ParticipantRemoved(UserIds),
    /// A rename or role change, a block or unblock of a direct conversation, a new group
    /// picture: the conversation now (participants without presence).
    #[serde(rename = "conversation.updated")]
    ConversationUpdated(ConversationChanged),
    /// Your session ended (sign-out, refresh token reuse, revocation, password change,
    /// account deletion); the socket closes with 4001 next.
    #[serde(rename = "session.revoked")]
    SessionRevoked(SessionEnded),
    /// A `resume` of one conversation finished; live delivery goes on from here (`rev` is
    /// the revision reached).
    #[serde(rename = "resumed")]
    Resumed(Resumed),
    /// A `resume` cursor is too far behind to replay: fetch history over HTTP instead.
    #[serde(rename = "resume.reload")]
    ResumeReload(Detail),
    /// A new entry of your notification feed (`GET /api/notifications`): a message
    /// mentioned you.
    #[serde(rename = "notification")]
    Notification(crate::messaging::notifications::feed::Notification),
}

/// `hello`'s data: the instance, who the socket belongs to, the server's ping interval, and
/// when the access token behind it expires (Unix seconds).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hello {
    pub instance: String,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub ping_interval_secs: u64,
    pub token_expires_at: i64,
}

/// No data: `{}`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Empty {}

/// `auth.ok`'s data: the socket's new deadline, Unix seconds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuthOk {
    pub expires_at: i64,
}

/// What went wrong, or why to reload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Detail {
    pub detail: String,
}

/// `read`'s data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadMoved {
    pub user_id: Uuid,
    pub last_read_seq: i64,
}

/// `typing`'s data; `expires_in` (seconds) only while typing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Typing {
    pub user_id: Uuid,
    pub is_typing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<f64>,
}

/// `presence`'s data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresenceChanged {
    pub user_id: Uuid,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// `participant.added`'s data: who joined, and the conversation as it is now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParticipantsAdded {
    pub user_ids: Vec<Uuid>,
    pub conversation: Option<Conversation>,
}

/// `participant.removed`'s data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserIds {
    pub user_ids: Vec<Uuid>,
}

/// `conversation.updated`'s data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationChanged {
    pub conversation: Option<Conversation>,
}

/// `session.revoked`'s data.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionEnded {
    pub session_id: Uuid,
}

/// `resumed`'s data: the last `seq` the caller can see.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Resumed {
    pub last_seq: i64,
}

/// Which change to a stored message an event announces (on the bus too, by these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageEvent {
    #[serde(rename = "message.created")]
    Created,
    #[serde(rename = "message.edited")]
    Edited,
    #[serde(rename = "message.deleted")]
    Deleted,
    #[serde(rename = "message.pinned")]
    Pinned,
    #[serde(rename = "message.unpinned")]
    Unpinned,
}

impl MessageEvent {
    /// The event carrying `message`.
    pub fn event(self, message: Message) -> Event {
        match self {
            Self::Created => Event::MessageCreated(message),
            Self::Edited => Event::MessageEdited(message),
            Self::Deleted => Event::MessageDeleted(message),
            Self::Pinned => Event::MessagePinned(message),
            Self::Unpinned => Event::MessageUnpinned(message),
        }
    }
}

/// A server frame on the WebSocket: the [`Event`] (`type`, `data`) and, when it concerns a
/// conversation, its id, and the `seq` and `rev` it is at.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServerFrame {
    #[serde(flatten)]
    pub event: Event,
    /// The conversation it concerns (absent for `hello`, `pong`, `auth.ok`, `presence`,
    /// `session.revoked`, and errors about no conversation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    /// The message's `seq` (`message.*`, `reaction.*`, membership events), the thread root's
    /// (`thread.updated`), or the marker (`read`, `delivered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The conversation revision of a stored change (`message.*`, `resumed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
}

impl ServerFrame {
    /// A frame about no conversation.
    pub fn new(event: Event) -> Self {
        Self {
            event,
            conversation_id: None,
            seq: None,
            rev: None,
        }
    }

    /// A frame about `conversation_id`.
    pub fn of(conversation_id: Uuid, event: Event) -> Self {
        Self {
            conversation_id: Some(conversation_id),
            ..Self::new(event)
        }
    }

    /// The same frame at `seq`.
    pub fn at(mut self, seq: Option<i64>) -> Self {
        self.seq = seq;
        self
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
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
    /// `{type:"delivered", conversation_id, seq}`: every message up to `seq` reached this
    /// device; moves the delivered marker (announced as `delivered`).
    Delivered { conversation_id: Uuid, seq: i64 },
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

/// Most conversations one `resume` may name.
pub const MAX_RESUME_CONVERSATIONS: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames keep the wire shape clients parse: `type`, `data`, and the conversation fields.
    #[test]
    fn frames_have_their_wire_shape() -> serde_json::Result<()> {
        let id = Uuid::nil();
        let frame = ServerFrame::of(id, Event::Resumed(Resumed { last_seq: 3 })).at(Some(3));
        assert_eq!(
            serde_json::to_value(&frame)?,
            serde_json::json!({"type": "resumed", "conversation_id": id, "seq": 3,
                               "data": {"last_seq": 3}})
        );
        let pong = serde_json::to_value(ServerFrame::new(Event::Pong(Empty {})))?;
        assert_eq!(pong, serde_json::json!({"type": "pong", "data": {}}));
        assert_eq!(
            serde_json::to_string(&MessageEvent::Created)?,
            "\"message.created\""
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
