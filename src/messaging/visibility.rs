//! Who sees what (DESIGN.md §7): a participant sees the history within their membership
//! period — from their joining (founders: the start) to their departure, inclusive of the
//! system message that says so — and someone who never was in a conversation gets the same
//! 404 as for one that does not exist.

use crate::platform::db::Traced;
use uuid::Uuid;

use super::model::{load_message_for, Message};
use crate::platform::error::ApiError;

/// What one user may see of one conversation: the seq range of their membership, whether it
/// is still going on, their role, and whether the conversation is a group.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub visible_from_seq: i64,
    /// `None` while still a participant.
    pub visible_to_seq: Option<i64>,
    pub admin: bool,
    pub is_group: bool,
    /// A direct conversation one of whose two participants blocked the other: read-only
    /// both ways ([`super::blocks`]).
    pub blocked: bool,
}

impl Scope {
    /// Still a participant (may send, read, act).
    pub fn current(&self) -> bool {
        self.visible_to_seq.is_none()
    }

    /// Whether the caller may change anything here (send, edit, react, pin): a current
    /// participant of a conversation that no block made read-only.
    ///
    /// Errors: 403 saying which.
    pub fn writable(&self) -> Result<(), ApiError> {
        if !self.current() {
            return Err(ApiError::Forbidden(
                "you are no longer in this conversation".into(),
            ));
        }
        if self.blocked {
            return Err(read_only());
        }
        Ok(())
    }

    /// `message` as this reader sees it: no quote of a parent before their range
    /// ([`Message::seen_from`]) and, once they have left, nothing others did with it since
    /// ([`Message::seen_as_former`]).
    pub fn show(&self, message: Message) -> Message {
        let message = message.seen_from(self.visible_from_seq);
        if self.current() {
            message
        } else {
            message.seen_as_former()
        }
    }

    /// `seq` lies within the visible range.
    pub fn sees(&self, seq: i64) -> bool {
        seq >= self.visible_from_seq && self.visible_to_seq.is_none_or(|to| seq <= to)
    }
}

/// The caller's [`Scope`] in a conversation; `None` if they never were in it.
///
/// Errors: the query fails.
pub async fn scope(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Scope>, tokio_postgres::Error> {
    let row = db
        .query_opt_t(
            "SELECT p.visible_from_seq, p.visible_to_seq, p.role = 'admin' AS admin, c.is_group,
                    c.blocked
             FROM messaging.participants p
             JOIN messaging.conversations c ON c.id = p.conversation_id
             WHERE p.conversation_id = $1 AND p.user_id = $2",
            &[&conversation_id, &user_id],
        )
        .await?;
    Ok(row.map(|r| Scope {
        visible_from_seq: r.get(0),
        visible_to_seq: r.get(1),
        admin: r.get(2),
        is_group: r.get(3),
        blocked: r.get(4),
    }))
}

/// The caller's scope if they are a current participant.
///
/// Errors: 404 (as for a conversation that does not exist) otherwise.
pub async fn current_scope(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Scope, ApiError> {
    match scope(db, conversation_id, user_id).await? {
        Some(s) if s.current() => Ok(s),
        _ => Err(conversation_not_found()),
    }
}

/// The caller's scope if they are or were a participant (history reads).
///
/// Errors: 404 otherwise.
pub async fn any_scope(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Scope, ApiError> {
    scope(db, conversation_id, user_id)
        .await?
        .ok_or_else(conversation_not_found)
}

/// `true` if `user_id` is a current participant of `conversation_id`.
///
/// Errors: the query fails.
pub async fn is_participant(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    Ok(scope(db, conversation_id, user_id)
        .await?
        .is_some_and(|s| s.current()))
}

/// The answer for a conversation that does not exist or that the caller is not part of.
pub fn conversation_not_found() -> ApiError {
    ApiError::NotFound("conversation not found".into())
}

/// The answer for a change to a direct conversation that a block made read-only.
pub fn read_only() -> ApiError {
    ApiError::Forbidden(
        "this conversation is read-only: one of its participants blocked the other".into(),
    )
}

/// The answer for a message that does not exist or that the caller cannot see.
pub fn message_not_found() -> ApiError {
    ApiError::NotFound("message not found".into())
}

/// Loads a message the caller can see, with the caller's scope in its conversation.
///
/// Errors: 404 if it does not exist or lies outside the caller's visible range.
pub async fn visible_message(
    db: &impl Traced,
    message_id: Uuid,
    user_id: Uuid,
) -> Result<(Message, Scope), ApiError> {
    let message = load_message_for(db, message_id, user_id)
        .await?
        .ok_or_else(message_not_found)?;
    match scope(db, message.conversation_id, user_id).await? {
        Some(s) if s.sees(message.seq) => Ok((s.show(message), s)),
        _ => Err(message_not_found()),
    }
}
