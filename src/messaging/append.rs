//! Appending to a conversation: the one statement that takes the next gapless `seq` and
//! `rev` under the conversation's row lock, checks the sender's membership, and returns the
//! message with its audience; and the next revision for a change to an existing message.

use crate::platform::db::Traced;
use uuid::Uuid;

use super::{
    domain::MessageKind,
    model::{Message, MESSAGE_COLUMNS},
    visibility::conversation_not_found,
};
use crate::platform::{db::unique_violation, error::ApiError};

/// A message to append with [`append`].
#[derive(Default)]
pub struct NewMessage<'a> {
    pub kind: MessageKind,
    pub sender_id: Option<Uuid>,
    pub content: Option<&'a str>,
    pub reply_to: Option<Uuid>,
    pub client_id: Option<&'a str>,
    pub meta: Option<serde_json::Value>,
    pub attachment_id: Option<Uuid>,
    /// Provenance of a forwarded copy ([`super::model::ForwardedFrom`]).
    pub forwarded_from: Option<serde_json::Value>,
}

/// Appends a message in one statement (atomic on its own, or part of the caller's
/// transaction): takes the conversation's next `seq` and `rev` under its row lock (the
/// `FOR NO KEY UPDATE` lock its `UPDATE` takes, as every conversation lock here: see
/// [`super::group_commit`]; writers queue on it, and a failed statement or rolled-back
/// transaction rolls the increment back, so `seq` has no gaps or duplicates), inserts,
/// moves the sender's read marker to it (a sender has read their own message), queues it for
/// the notification worker (`messaging.notify_queue`; not a system message), and returns
/// it as the API shows it. One round trip:
/// data-modifying CTEs (PostgreSQL docs §7.8.4), so a send holds the row lock for one
/// statement instead of a transaction's worth of round trips.
///
/// Membership is checked by that same statement, under the row lock
/// (`messaging.is_current_participant`, migrations/messaging/V4): a sender removed while the
/// send waited for the lock appends nothing. System messages (the service's own record of
/// a change, made under the lock by the change itself) are not checked.
///
/// Errors: 404 when the sender is not (or no longer) a current participant; 409 for a
/// `client_id` the sender already used here (a concurrent retry); the statement's own
/// failures otherwise.
pub async fn append(
    db: &impl Traced,
    conversation_id: Uuid,
    new: NewMessage<'_>,
) -> Result<Message, ApiError> {
    Ok(append_for(db, conversation_id, new).await?.0)
}

/// Most recipients an event carries in its notification; past this the listeners look
/// them up (a NOTIFY payload stays under 8000 bytes).
pub const MAX_CARRIED_RECIPIENTS: usize = 64;

/// Who may see a newly appended message, as of the statement that appended it: the current
/// participants whose visible range includes it, and among them those who joined after the
/// parent it quotes (they get it without the quote).
#[derive(Debug, Clone, Default)]
pub struct Audience {
    pub all: Vec<Uuid>,
    pub quote_blind: Vec<Uuid>,
}

/// The two columns an appending statement returns for its message's [`Audience`]
/// (`recipients`, `quote_blind`), at most one past [`MAX_CARRIED_RECIPIENTS`] each; the
/// statement names the appended message `m` and its parent `pm`.
pub static AUDIENCE_COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| audience_columns(true));

/// [`AUDIENCE_COLUMNS`] for a statement whose messages reply to none: `quote_blind` is
/// empty (what the full columns give when `pm` is NULL), and the statement needs no `pm`.
pub static AUDIENCE_COLUMNS_WITHOUT_QUOTE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| audience_columns(false));

/// `recipients`, and `quote_blind` from `pm` if `quoting`, else empty.
fn audience_columns(quoting: bool) -> String {
    let limit = MAX_CARRIED_RECIPIENTS + 1;
    let recipients = |extra: &str| {
        format!(
            "ARRAY(SELECT rp.user_id FROM messaging.participants rp
               WHERE rp.conversation_id = m.conversation_id AND rp.left_at IS NULL
                 AND rp.visible_from_seq <= m.seq{extra}
               LIMIT {limit})"
        )
    };
    let quote_blind = if quoting {
        recipients(" AND rp.visible_from_seq > pm.seq")
    } else {
        "'{}'::uuid[]".to_owned()
    };
    format!(
        "{} AS recipients, {quote_blind} AS quote_blind",
        recipients("")
    )
}

impl Audience {
    /// Reads [`AUDIENCE_COLUMNS`]; `None` past [`MAX_CARRIED_RECIPIENTS`] (the listeners look
    /// the recipients up then).
    pub fn from_row(row: &tokio_postgres::Row) -> Option<Self> {
        let all: Vec<Uuid> = row.get("recipients");
        let quote_blind: Vec<Uuid> = row.get("quote_blind");
        (all.len() <= MAX_CARRIED_RECIPIENTS).then_some(Self { all, quote_blind })
    }
}

/// [`append`], also returning its [`Audience`]. The listeners deliver to exactly these (none
/// of them needs to look membership up again), or `None` when there are more than
/// [`MAX_CARRIED_RECIPIENTS`].
pub async fn append_for(
    db: &impl Traced,
    conversation_id: Uuid,
    new: NewMessage<'_>,
) -> Result<(Message, Option<Audience>), ApiError> {
    static APPEND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH c AS (
                 UPDATE messaging.conversations
                 SET last_seq = last_seq + 1, last_rev = last_rev + 1, last_activity_at = now()
                 WHERE id = $2::uuid
                   AND ($4::text = 'system'
                        OR (NOT blocked AND messaging.is_current_participant(id, $3::uuid)))
                 RETURNING last_seq, last_rev
             ), m AS (
                 INSERT INTO messaging.messages
                     (id, conversation_id, seq, sender_id, kind, content, reply_to, client_id,
                      meta, attachment_id, rev, created_rev, forwarded_from)
                 SELECT $1::uuid, $2::uuid, c.last_seq, $3::uuid, $4::text, $5::text, $6::uuid,
                        $7::text, $8::jsonb, $9::uuid, c.last_rev, c.last_rev, $10::jsonb
                 FROM c
                 RETURNING *
             ), r AS (
                 UPDATE messaging.participants p SET last_read_seq = GREATEST(p.last_read_seq, m.seq),
                     last_delivered_seq = GREATEST(p.last_delivered_seq, m.seq)
                 FROM m WHERE p.conversation_id = m.conversation_id AND p.user_id = m.sender_id
             ), q AS (
                 INSERT INTO messaging.notify_queue (message_id, conversation_id, seq)
                 SELECT m.id, m.conversation_id, m.seq FROM m WHERE m.kind <> 'system'
             )
             SELECT {columns}, {audience}
             FROM m LEFT JOIN messaging.messages pm ON pm.id = m.reply_to",
            columns = MESSAGE_COLUMNS.as_str(),
            audience = AUDIENCE_COLUMNS.as_str()
        )
    });
    let row = db
        .query_opt_t(
            APPEND.as_str(),
            &[
                &Uuid::now_v7(),
                &conversation_id,
                &new.sender_id,
                &new.kind.as_str(),
                &new.content,
                &new.reply_to,
                &new.client_id,
                &new.meta,
                &new.attachment_id,
                &new.forwarded_from,
            ],
        )
        .await
        .map_err(|e| match unique_violation(&e) {
            Some("messages_client_id_key") => {
                ApiError::Conflict("client_id was already used for another message".into())
            }
            _ => e.into(),
        })?;
    let row = row.ok_or_else(conversation_not_found)?;
    Ok((Message::from_row(&row), Audience::from_row(&row)))
}

/// Takes the conversation's row lock for a change to one of its messages by `user_id`
/// (a reaction, a pin), as every send, edit and membership change takes it, and checks under
/// it that they are still a current participant and that no block made it read-only.
/// Returns whether they are an admin.
///
/// Errors: 404 when they are no longer a participant; 403 when it is read-only.
pub async fn lock_writable(
    tx: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<bool, ApiError> {
    let row = tx
        .query_opt_t(
            "SELECT c.blocked, p.role = 'admin' FROM messaging.conversations c
             JOIN messaging.participants p ON p.conversation_id = c.id
             WHERE c.id = $1 AND p.user_id = $2 AND p.left_at IS NULL
             FOR NO KEY UPDATE OF c",
            &[&conversation_id, &user_id],
        )
        .await?
        .ok_or_else(super::visibility::message_not_found)?;
    if row.get::<_, bool>(0) {
        return Err(super::visibility::read_only());
    }
    Ok(row.get(1))
}

/// Takes the conversation's next revision for a change to an existing message (edit,
/// delete, reaction, pin), under the conversation's row lock like [`append`].
///
/// Errors: the update fails.
pub async fn next_rev(tx: &impl Traced, conversation_id: Uuid) -> Result<i64, ApiError> {
    Ok(tx
        .query_one_t(
            "UPDATE messaging.conversations SET last_rev = last_rev + 1
             WHERE id = $1 RETURNING last_rev",
            &[&conversation_id],
        )
        .await?
        .get(0))
}
