//! Typing: ephemeral, never stored. Announced to a conversation's current participants —
//! except the typist and those they block (issue 20) — from a socket's `typing` frame
//! (`crate::realtime`, which also expires it) or from `POST /api/conversations/{id}/typing`
//! (DESIGN.md's endpoint, for clients without a socket: each call lasts `TYPING_TTL_SECS`).

use actix_web::{
    web::{self, Json, Path},
    HttpResponse,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    budget::{self, Budget},
    caller::Caller,
    protocol::{Event, ServerFrame, Typing},
    publish::publish_frame_except,
    visibility, State,
};
use crate::platform::{db::Traced, error::ApiError};

/// HTTP typing announcements a user may make per minute (a socket's are bounded by its frame
/// rate and re-announced at most every 2 s).
pub const HTTP_TYPING_PER_MINUTE: i64 = 60;

/// Why typing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a current participant.
    NotFound,
    /// A direct conversation a block made read-only.
    ReadOnly,
}

/// Who must not see `user_id` typing in `conversation_id`: the participants they block.
///
/// Errors: the query fails (outer); [`Refused`] (inner).
pub async fn audience(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Result<Vec<Uuid>, Refused>, tokio_postgres::Error> {
    let row = db
        .query_opt_t(
            "SELECT c.blocked, ARRAY(
                 SELECT b.blocked_id FROM messaging.blocks b
                 JOIN messaging.participants o
                   ON o.conversation_id = c.id AND o.user_id = b.blocked_id AND o.left_at IS NULL
                 WHERE b.blocker_id = $2) AS hidden
             FROM messaging.conversations c
             JOIN messaging.participants p ON p.conversation_id = c.id
             WHERE c.id = $1 AND p.user_id = $2 AND p.left_at IS NULL",
            &[&conversation_id, &user_id],
        )
        .await?;
    Ok(match row {
        None => Err(Refused::NotFound),
        Some(r) if r.get::<_, bool>(0) => Err(Refused::ReadOnly),
        Some(r) => Ok(r.get(1)),
    })
}

/// Announces `user_id`'s typing in `conversation_id` to its participants, except themself
/// and `hidden`; `true` lasts `TYPING_TTL_SECS` (`expires_in`).
pub fn announce(
    state: &State,
    conversation_id: Uuid,
    user_id: Uuid,
    is_typing: bool,
    mut hidden: Vec<Uuid>,
) {
    let frame = ServerFrame::of(
        conversation_id,
        Event::Typing(Typing {
            user_id,
            is_typing,
            expires_in: is_typing.then(|| state.cfg.typing_ttl.as_secs_f64()),
        }),
    );
    hidden.push(user_id);
    publish_frame_except(state, conversation_id, hidden, frame.to_json());
}

/// `POST /api/conversations/{id}/typing` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TypingRequest {
    pub is_typing: bool,
}

/// `POST /api/conversations/{id}/typing` `{is_typing}`: announces the caller typing (for
/// `TYPING_TTL_SECS`: call again to keep it up) or stopping, as a socket's `typing` frame
/// does. 204. 404 unless a current participant; 403 in a read-only (blocked) conversation;
/// 429 past [`HTTP_TYPING_PER_MINUTE`].
#[utoipa::path(post, path = "/api/conversations/{id}/typing", tag = "messages",
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body = TypingRequest,
    responses((status = 204, description = "Announced.")))]
pub async fn typing(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<TypingRequest>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let conn = state.db.primary().await?;
    let hidden = match audience(&conn, conversation_id, caller.user_id).await? {
        Ok(hidden) => hidden,
        Err(Refused::NotFound) => return Err(visibility::conversation_not_found()),
        Err(Refused::ReadOnly) => return Err(visibility::read_only()),
    };
    budget::spend(
        &conn,
        caller.user_id,
        Budget::Typing,
        1,
        HTTP_TYPING_PER_MINUTE,
        std::time::Duration::from_secs(60),
        || format!("at most {HTTP_TYPING_PER_MINUTE} typing announcements a minute"),
    )
    .await?;
    announce(
        &state,
        conversation_id,
        caller.user_id,
        body.is_typing,
        hidden,
    );
    Ok(HttpResponse::NoContent().finish())
}
