//! Reactions (issue 20): a participant adds or removes an emoji on a message they can see —
//! one per user per emoji, at most [`MAX_DISTINCT`] different emoji per message. The counts
//! live beside the message (`messages.reactions`, migrations/messaging V9) and each change
//! takes the conversation's next revision, so `reaction.*` events reach sockets in `rev`
//! order and a `resume` replays the message with its current counts.

use actix_web::{
    web::{self, Path},
    HttpResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    append::{lock_writable, next_rev},
    caller::Caller,
    messages::answer_with,
    model::Message,
    protocol::{Event, ServerFrame},
    publish::publish_message_frame,
    visibility::visible_message,
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// Most different emoji on one message.
pub const MAX_DISTINCT: i64 = 20;

/// An emoji as Unicode defines it (a fully-qualified emoji of the Unicode emoji list, skin
/// tones included), in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emoji(&'static str);

impl Emoji {
    /// Parses one emoji.
    ///
    /// Errors: 422 for anything else (text, several emoji, a shortcode).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        emojis::get(s)
            .map(|e| Self(e.as_str()))
            .ok_or_else(|| ApiError::invalid_field("emoji", "must be one Unicode emoji"))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// `reaction.added` / `reaction.removed` data: who, which emoji, and how many now react
/// with it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReactionChanged {
    pub message_id: Uuid,
    pub user_id: Uuid,
    pub emoji: String,
    pub count: i64,
}

/// `PUT /api/messages/{id}/reactions/{emoji}`: the caller reacts with `emoji` (percent-encoded
/// in the path). Idempotent: reacting again changes nothing. 200 with the message. 404 if the
/// caller cannot see it; 403 for a former participant or a read-only (blocked) conversation;
/// 409 for a deleted message or a message with [`MAX_DISTINCT`] other emoji; 422 for
/// something that is not one emoji.
#[utoipa::path(put, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages", operation_id = "add_reaction",
    params(("id" = Uuid, Path, description = "message id"), ("emoji" = String, Path, description = "one emoji, percent-encoded")),
    responses((status = 200, description = "The message with its reactions.", body = Message)))]
pub async fn add(
    state: web::Data<State>,
    caller: Caller,
    path: Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, emoji) = path.into_inner();
    react(&state, &caller, id, Emoji::parse(&emoji)?, true).await
}

/// `DELETE /api/messages/{id}/reactions/{emoji}`: takes the caller's reaction back.
/// Idempotent. 200 with the message; errors as for adding.
#[utoipa::path(delete, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages", operation_id = "remove_reaction",
    params(("id" = Uuid, Path, description = "message id"), ("emoji" = String, Path, description = "one emoji, percent-encoded")),
    responses((status = 200, description = "The message with its reactions.", body = Message)))]
pub async fn remove(
    state: web::Data<State>,
    caller: Caller,
    path: Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, emoji) = path.into_inner();
    react(&state, &caller, id, Emoji::parse(&emoji)?, false).await
}

/// Recomputes a message's counts (`$1`) from its reaction rows, at revision `$2`: emoji in
/// the order first used.
const RECOUNT: &str = "UPDATE messaging.messages m SET rev = $2, reactions = (
         SELECT jsonb_agg(jsonb_build_object('emoji', x.emoji, 'count', x.n) ORDER BY x.first, x.emoji)
         FROM (SELECT r.emoji, count(*) AS n, min(r.created_at) AS first
               FROM messaging.reactions r WHERE r.message_id = m.id GROUP BY r.emoji) x)
     WHERE m.id = $1 AND m.deleted_at IS NULL
     RETURNING coalesce((SELECT (e->>'count')::bigint FROM jsonb_array_elements(m.reactions) e
                         WHERE e->>'emoji' = $3), 0)";

async fn react(
    state: &State,
    caller: &Caller,
    id: Uuid,
    emoji: Emoji,
    adding: bool,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.primary().await?;
    let (message, scope) = visible_message(&conn, id, caller.user_id).await?;
    scope.writable()?;
    if message.deleted {
        return Err(ApiError::Conflict("the message was deleted".into()));
    }
    let tx = conn.transaction().await?;
    lock_writable(&tx, message.conversation_id, caller.user_id).await?;
    let changed = if adding {
        tx.execute_t(
            "INSERT INTO messaging.reactions (message_id, emoji, user_id)
             SELECT $1, $2, $3
             WHERE EXISTS (SELECT 1 FROM messaging.reactions WHERE message_id = $1 AND emoji = $2)
                OR (SELECT count(DISTINCT emoji) FROM messaging.reactions WHERE message_id = $1) < $4
             ON CONFLICT DO NOTHING",
            &[&id, &emoji.as_str(), &caller.user_id, &MAX_DISTINCT],
        )
        .await?
    } else {
        tx.execute_t(
            "DELETE FROM messaging.reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
            &[&id, &emoji.as_str(), &caller.user_id],
        )
        .await?
    };
    if changed == 0 {
        let already = tx
            .query_opt_t(
                "SELECT 1 FROM messaging.reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3",
                &[&id, &emoji.as_str(), &caller.user_id],
            )
            .await?
            .is_some();
        drop(tx);
        if adding && !already {
            return Err(ApiError::Conflict(format!(
                "a message takes at most {MAX_DISTINCT} different emoji"
            )));
        }
        // Nothing to change (a retry): the message as it is.
        return answer_with(state, &conn, id, caller.user_id, scope.visible_from_seq).await;
    }
    let rev = next_rev(&tx, message.conversation_id).await?;
    let Some(count) = tx
        .query_opt_t(RECOUNT, &[&id, &rev, &emoji.as_str()])
        .await?
    else {
        return Err(ApiError::Conflict("the message was deleted".into()));
    };
    tx.commit().await?;
    let data = ReactionChanged {
        message_id: id,
        user_id: caller.user_id,
        emoji: emoji.as_str().to_owned(),
        count: count.get(0),
    };
    let event = if adding {
        Event::ReactionAdded(data)
    } else {
        Event::ReactionRemoved(data)
    };
    let frame = ServerFrame {
        rev: Some(rev),
        ..ServerFrame::of(message.conversation_id, event).at(Some(message.seq))
    };
    publish_message_frame(
        state,
        message.conversation_id,
        (message.seq, rev),
        None,
        frame.to_json(),
    );
    answer_with(state, &conn, id, caller.user_id, scope.visible_from_seq).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_emoji_is_taken_and_anything_else_refused() {
        for ok in ["👍", "🎉", "❤️", "👍🏽", "🏳️‍🌈"] {
            assert!(Emoji::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in ["", "a", "👍👍", ":+1:", "👍 ", "\u{0}"] {
            assert!(Emoji::parse(bad).is_err(), "{bad:?} taken");
        }
    }
}
