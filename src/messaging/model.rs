//! Wire shapes of the messaging API (DESIGN.md §3) and their SQL column lists.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A message: `{id, conversation_id, seq, sender_id, kind, content, reply_to, created_at,
/// edited_at, deleted}`. `seq` is per conversation, gapless, from 1. `content` is null once
/// deleted; `sender_id` is null for `system` messages.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender_id: Option<Uuid>,
    pub kind: String,
    pub content: Option<String>,
    pub reply_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

/// Columns to select for [`Message::from_row`] (table alias `m`).
pub const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.seq, m.sender_id, m.kind, \
     m.content, m.reply_to, m.created_at, m.edited_at, m.deleted_at IS NOT NULL AS deleted";

impl Message {
    /// Reads a row selected with [`MESSAGE_COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            conversation_id: row.get("conversation_id"),
            seq: row.get("seq"),
            sender_id: row.get("sender_id"),
            kind: row.get("kind"),
            content: row.get("content"),
            reply_to: row.get("reply_to"),
            created_at: row.get("created_at"),
            edited_at: row.get("edited_at"),
            deleted: row.get("deleted"),
        }
    }
}

/// A participant with their public profile.
#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub role: String,
    pub joined_at: DateTime<Utc>,
    /// Read marker: every `seq` up to this one has been read.
    pub last_read_seq: i64,
}

/// A conversation with its participants.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: Uuid,
    pub is_group: bool,
    pub name: Option<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seq: i64,
    pub last_activity_at: DateTime<Utc>,
    pub participants: Vec<Participant>,
}

/// One entry of the caller's conversation list.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationSummary {
    pub id: Uuid,
    pub is_group: bool,
    pub name: Option<String>,
    pub last_seq: i64,
    pub last_activity_at: DateTime<Utc>,
    /// The caller's read marker.
    pub last_read_seq: i64,
    /// `last_seq - last_read_seq`.
    pub unread_count: i64,
    pub last_message: Option<Message>,
}

/// A server frame on the WebSocket (DESIGN.md §4): `{type, conversation_id, seq?, data}`.
#[derive(Debug, Serialize)]
pub struct ServerFrame<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub data: T,
}

impl<T: Serialize> ServerFrame<'_, T> {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Loads a conversation with its participants, or `None` if it does not exist.
///
/// Errors: the queries fail.
pub async fn load_conversation(
    db: &impl deadpool_postgres::GenericClient,
    id: Uuid,
) -> Result<Option<Conversation>, tokio_postgres::Error> {
    let Some(c) = db
        .query_opt(
            "SELECT id, is_group, name, created_by, created_at, last_seq, last_activity_at
             FROM messaging.conversations WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let participants = db
        .query(
            "SELECT p.user_id, u.username, u.display_name, p.role, p.joined_at, p.last_read_seq
             FROM messaging.participants p
             LEFT JOIN auth.public_profiles u ON u.id = p.user_id
             WHERE p.conversation_id = $1
             ORDER BY p.joined_at, p.user_id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| Participant {
            user_id: r.get("user_id"),
            username: r.get("username"),
            display_name: r.get("display_name"),
            role: r.get("role"),
            joined_at: r.get("joined_at"),
            last_read_seq: r.get("last_read_seq"),
        })
        .collect();
    Ok(Some(Conversation {
        id: c.get("id"),
        is_group: c.get("is_group"),
        name: c.get("name"),
        created_by: c.get("created_by"),
        created_at: c.get("created_at"),
        last_seq: c.get("last_seq"),
        last_activity_at: c.get("last_activity_at"),
        participants,
    }))
}

/// `true` if `user_id` is a participant of `conversation_id`.
///
/// Errors: the query fails.
pub async fn is_participant(
    db: &impl deadpool_postgres::GenericClient,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM messaging.participants WHERE conversation_id = $1 AND user_id = $2",
            &[&conversation_id, &user_id],
        )
        .await?
        .is_some())
}
