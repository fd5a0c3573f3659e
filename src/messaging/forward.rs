//! Forwarding (issue 20): a copy of a message the caller can see, appended to another
//! conversation they are in, with its provenance — the original's sender and time, and its
//! conversation only when every participant of the target could see the original there.
//! A file is forwarded by reference: the copy names the same attachment, which is served to
//! whoever can see any message of it and removed with the last one.

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpResponse,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    append::{append_for, NewMessage},
    caller::Caller,
    domain::MessageKind,
    messages::{answer, by_client_id, check_send_rate, validate_client_id},
    model::{ForwardedFrom, Message},
    protocol::MessageEvent,
    publish::publish_message_to,
    visibility::{current_scope, visible_message},
    State,
};
use crate::platform::{
    db::Traced,
    error::{ApiError, FieldErrors},
};

/// `POST /api/messages/{id}/forward` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Forward {
    /// The conversation to copy it into (the caller must be in it).
    pub conversation_id: Uuid,
    /// Idempotency key, as for a send: a retry returns the same copy.
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: Option<String>,
}

/// `POST /api/messages/{id}/forward` `{conversation_id, client_id?}`: 201 with the copy in
/// the target conversation (`forwarded_from` says where it came from); 200 with the earlier
/// copy when `client_id` repeats. 404 if the caller cannot see the message or is not in the
/// target; 403 for a read-only (blocked) target; 409 for a deleted message; 422 for a
/// system message; 429 past the send rate limit.
#[utoipa::path(post, path = "/api/messages/{id}/forward", tag = "messages",
    params(("id" = Uuid, Path, description = "the message to forward")),
    request_body = Forward,
    responses((status = 201, description = "The copy, in the target conversation.", body = Message),
        (status = 200, description = "A retry: the copy made before.", body = Message)))]
pub async fn forward(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<Forward>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    validate_client_id(body.client_id.as_deref(), &mut errors);
    ApiError::check(errors)?;
    let mut conn = state.db.primary().await?;
    let (source, _) = visible_message(&conn, id.into_inner(), caller.user_id).await?;
    if source.deleted {
        return Err(ApiError::Conflict("the message was deleted".into()));
    }
    if source.kind == MessageKind::System {
        return Err(ApiError::invalid_field(
            "id",
            "a system message cannot be forwarded",
        ));
    }
    let target = body.conversation_id;
    let scope = current_scope(&conn, target, caller.user_id).await?;
    scope.writable()?;
    let earlier = by_client_id(
        &conn,
        target,
        caller.user_id,
        body.client_id.as_deref(),
        scope.visible_from_seq,
    )
    .await?;
    if let Some(existing) = earlier {
        return answer(&state, &conn, &existing, StatusCode::OK).await;
    }
    check_send_rate(&state, &conn, caller.user_id).await?;
    let provenance = provenance(&conn, &source, target).await?;
    let tx = conn.transaction().await?;
    // The original as it is now, kept from being deleted until this commits (a delete takes
    // the row FOR UPDATE): its file is then still named by the copy, and never left behind.
    let Some(original) = tx
        .query_opt_t(
            "SELECT content, attachment_id FROM messaging.messages
             WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
            &[&source.id],
        )
        .await?
    else {
        return Err(ApiError::Conflict("the message was deleted".into()));
    };
    let (content, attachment_id): (Option<String>, Option<Uuid>) =
        (original.get(0), original.get(1));
    let (copy, audience) = append_for(
        &tx,
        target,
        NewMessage {
            kind: source.kind,
            sender_id: Some(caller.user_id),
            content: content.as_deref(),
            client_id: body.client_id.as_deref(),
            attachment_id,
            forwarded_from: Some(serde_json::to_value(&provenance).map_err(anyhow::Error::from)?),
            ..NewMessage::default()
        },
    )
    .await?;
    tx.commit().await?;
    publish_message_to(&state, MessageEvent::Created, &copy, audience);
    answer(&state, &conn, &copy, StatusCode::CREATED).await
}

/// Where the copy says it came from: the original's (a forward of a forward keeps the first
/// one's), with its conversation only if every current participant of `target` can see the
/// original there — an id they could not open tells them nothing, but is left out all the
/// same.
async fn provenance(
    db: &impl Traced,
    source: &Message,
    target: Uuid,
) -> Result<ForwardedFrom, ApiError> {
    let mut from = source.forwarded_from.clone().unwrap_or(ForwardedFrom {
        message_id: source.id,
        sender_id: source.sender_id,
        created_at: source.created_at,
        conversation_id: Some(source.conversation_id),
    });
    if let Some(origin) = from.conversation_id {
        let seen_by_all: bool = db
            .query_one_t(
                "SELECT NOT EXISTS (
                     SELECT 1 FROM messaging.participants t
                     WHERE t.conversation_id = $1 AND t.left_at IS NULL
                       AND NOT EXISTS (
                           SELECT 1 FROM messaging.participants s
                           JOIN messaging.messages m ON m.id = $3
                           WHERE s.conversation_id = $2 AND s.user_id = t.user_id
                             AND m.conversation_id = $2
                             AND s.visible_from_seq <= m.seq
                             AND (s.visible_to_seq IS NULL OR s.visible_to_seq >= m.seq)))",
                &[&target, &origin, &from.message_id],
            )
            .await?
            .get(0);
        if !seen_by_all {
            from.conversation_id = None;
        }
    }
    Ok(from)
}
