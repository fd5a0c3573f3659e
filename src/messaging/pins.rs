//! Pins (issue 20): a message pinned to its conversation — by either participant of a direct
//! conversation, by an admin in a group — at most [`MAX_PINS`] per conversation, listed newest
//! pin first. A pin change takes the conversation's next revision and is announced as
//! `message.pinned` / `message.unpinned` (a `resume` replays the message with its `pinned`).

use actix_web::{
    web::{self, Path},
    HttpResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    append::{lock_writable, next_rev},
    caller::Caller,
    consistency::Consistency,
    messages::answer_with,
    model::{load_message, message_columns_seen_from, my_reactions_column, Message, MESSAGE_FROM},
    protocol::MessageEvent,
    publish::publish_message,
    visibility::{self, any_scope, visible_message},
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// Most pinned messages in one conversation.
pub const MAX_PINS: i64 = 50;

/// `PUT /api/messages/{id}/pin`: pins the message. Idempotent. 200 with the message. 404 if
/// the caller cannot see it; 403 for a group member who is not an admin, a former
/// participant, or a read-only (blocked) conversation; 409 for a deleted message or a
/// conversation with [`MAX_PINS`] pins.
#[utoipa::path(put, path = "/api/messages/{id}/pin", tag = "messages",
    params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "The pinned message.", body = Message)))]
pub async fn pin(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set(&state, &caller, id.into_inner(), true).await
}

/// `DELETE /api/messages/{id}/pin`: unpins it. Idempotent. 200 with the message; errors as for
/// pinning.
#[utoipa::path(delete, path = "/api/messages/{id}/pin", tag = "messages",
    params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "The message, no longer pinned.", body = Message)))]
pub async fn unpin(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    set(&state, &caller, id.into_inner(), false).await
}

async fn set(
    state: &State,
    caller: &Caller,
    id: Uuid,
    pinning: bool,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.primary().await?;
    let (message, scope) = visible_message(&conn, id, caller.user_id).await?;
    scope.writable()?;
    if scope.is_group && !scope.admin {
        return Err(only_admins());
    }
    if message.deleted {
        return Err(ApiError::Conflict("the message was deleted".into()));
    }
    if message.pinned.is_some() == pinning {
        return answer_with(state, &conn, id, caller.user_id, scope.visible_from_seq).await;
    }
    let tx = conn.transaction().await?;
    // Checked again under the conversation's lock: a demotion, a removal or a block that
    // committed meanwhile.
    let admin = lock_writable(&tx, message.conversation_id, caller.user_id).await?;
    if scope.is_group && !admin {
        return Err(only_admins());
    }
    let rev = next_rev(&tx, message.conversation_id).await?;
    let changed = if pinning {
        tx.execute_t(
            "UPDATE messaging.messages m SET pinned_at = now(), pinned_by = $2, rev = $3
             WHERE m.id = $1 AND m.deleted_at IS NULL AND m.pinned_at IS NULL
               AND (SELECT count(*) FROM messaging.messages o
                    WHERE o.conversation_id = m.conversation_id AND o.pinned_at IS NOT NULL) < $4",
            &[&id, &caller.user_id, &rev, &MAX_PINS],
        )
        .await?
    } else {
        tx.execute_t(
            "UPDATE messaging.messages SET pinned_at = NULL, pinned_by = NULL, rev = $2
             WHERE id = $1 AND pinned_at IS NOT NULL",
            &[&id, &rev],
        )
        .await?
    };
    if changed == 0 {
        // Dropped: the revision taken is rolled back with it.
        drop(tx);
        let now = load_message(&conn, id)
            .await?
            .ok_or_else(visibility::message_not_found)?;
        if pinning && now.pinned.is_none() && !now.deleted {
            return Err(ApiError::Conflict(format!(
                "a conversation keeps at most {MAX_PINS} pinned messages"
            )));
        }
        return answer_with(state, &conn, id, caller.user_id, scope.visible_from_seq).await;
    }
    tx.commit().await?;
    if let Some(now) = load_message(&conn, id).await? {
        let event = if pinning {
            MessageEvent::Pinned
        } else {
            MessageEvent::Unpinned
        };
        publish_message(state, event, &now);
    }
    answer_with(state, &conn, id, caller.user_id, scope.visible_from_seq).await
}

fn only_admins() -> ApiError {
    ApiError::Forbidden("only admins pin messages in a group".into())
}

/// `GET /api/conversations/{id}/pins` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pins {
    /// Newest pin first.
    pub messages: Vec<Message>,
}

/// `GET /api/conversations/{id}/pins`: the pinned messages the caller can see, newest pin
/// first. 404 if the caller never was a participant; 403 for a former participant (pins
/// change after they left). Served by a replica (read-your-writes).
#[utoipa::path(get, path = "/api/conversations/{id}/pins", tag = "conversations", operation_id = "list_pins",
    params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 200, description = "The pinned messages.", body = Pins)))]
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {columns}, {mine} FROM {MESSAGE_FROM}
             WHERE m.conversation_id = $1 AND m.pinned_at IS NOT NULL AND m.seq >= $3
             ORDER BY m.pinned_at DESC, m.seq DESC",
            columns = message_columns_seen_from("$3"),
            mine = my_reactions_column("$2"),
        )
    });
    let conversation_id = id.into_inner();
    let user = caller.user_id;
    let messages = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let scope = any_scope(conn, conversation_id, user).await?;
                if !scope.current() {
                    return Err(ApiError::Forbidden(
                        "you are no longer in this conversation".into(),
                    ));
                }
                Ok(conn
                    .query_t(
                        SQL.as_str(),
                        &[&conversation_id, &user, &scope.visible_from_seq],
                    )
                    .await?
                    .iter()
                    .map(|r| Message::from_row(r).seen_from(scope.visible_from_seq))
                    .collect())
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(Pins { messages }))
}
