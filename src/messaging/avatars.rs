//! Avatars: one small image per user, readable by anyone signed in, and one per group
//! (issue 20), set by its admins and readable by its participants — stored like attachments.

use crate::platform::db::Traced;
use actix_multipart::Multipart;
use actix_web::{
    http::StatusCode,
    web::{self, Path},
    HttpRequest, HttpResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    attachments::{charge_upload, read_upload, store, Upload, UploadForm, AVATAR_TYPES},
    caller::Caller,
    consistency::{self, Consistency},
    file_serving::{range_of, serve_found, STORED_COLUMNS},
    groups::{lock, require_admin},
    model::{load_conversation, load_conversation_for},
    protocol::{ConversationChanged, Event, ServerFrame},
    publish::publish_frame,
    State,
};
use crate::platform::error::ApiError;

/// An avatar's metadata.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AvatarInfo {
    pub attachment_id: Uuid,
    pub content_type: String,
    pub size: u64,
}

/// `PUT /api/users/me/avatar` (multipart: `file`): sets the caller's avatar. 200
/// `{attachment_id, content_type, size}`. 413 past `AVATAR_MAX_BYTES` or the stored-bytes
/// quota; 429 past the upload quota ([`charge_upload`]); 422 unless the bytes are a PNG,
/// JPEG, GIF or WebP image.
#[utoipa::path(put, path = "/api/users/me/avatar", tag = "attachments",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The new avatar.", body = AvatarInfo)))]
pub async fn put_avatar(
    state: web::Data<State>,
    caller: Caller,
    body: Multipart,
) -> Result<HttpResponse, ApiError> {
    charge_upload(&state, &state.db.primary().await?, caller.user_id, 0).await?;
    let upload = read_avatar(&state, body).await?;
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    charge_upload(&state, &tx, caller.user_id, upload.size).await?;
    let attachment_id = store(&tx, None, caller.user_id, &upload).await?;
    let old: Option<Uuid> = tx
        .query_opt_t(
            "WITH old AS (SELECT attachment_id FROM messaging.avatars WHERE user_id = $1)
             INSERT INTO messaging.avatars (user_id, attachment_id) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET attachment_id = $2, updated_at = now()
             RETURNING (SELECT attachment_id FROM old)",
            &[&caller.user_id, &attachment_id],
        )
        .await?
        .and_then(|r| r.get(0));
    if let Some(old) = old {
        tx.execute_t("DELETE FROM messaging.attachments WHERE id = $1", &[&old])
            .await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(AvatarInfo {
        attachment_id,
        content_type: upload.content_type,
        size: upload.size,
    }))
}

/// Reads an avatar upload (at most `AVATAR_MAX_BYTES`).
///
/// Errors: 413 past the size; 422 unless the bytes are a PNG, JPEG, GIF or WebP image.
async fn read_avatar(state: &State, body: Multipart) -> Result<Upload, ApiError> {
    let upload = read_upload(body, state.cfg.avatar_max_bytes, false).await?;
    if !AVATAR_TYPES.contains(&upload.content_type.as_str()) {
        return Err(ApiError::invalid_field(
            "file",
            "an avatar must be a PNG, JPEG, GIF or WebP image",
        ));
    }
    Ok(upload)
}

/// `PUT /api/conversations/{id}/avatar` (multipart: `file`): a group admin sets the group's
/// avatar; its participants get `conversation.updated` (with the new `avatar_id`). 200 with
/// the conversation. 404 unless a current participant; 403 for a member who is not an admin;
/// 422 for a direct conversation or a file that is not a PNG, JPEG, GIF or WebP image; 413
/// past `AVATAR_MAX_BYTES` or the stored-bytes quota; 429 past the upload quota.
#[utoipa::path(put, path = "/api/conversations/{id}/avatar", tag = "groups",
    params(("id" = Uuid, Path, description = "conversation id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The group with its new avatar.", body = crate::messaging::model::Conversation)))]
pub async fn put_group_avatar(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Multipart,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    {
        // Checked before the body is read, and again under the lock after.
        let mut conn = state.db.primary().await?;
        let tx = conn.transaction().await?;
        require_admin(&lock(&tx, conversation_id, caller.user_id).await?)?;
        charge_upload(&state, &tx, caller.user_id, 0).await?;
    }
    let upload = read_avatar(&state, body).await?;
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    require_admin(&lock(&tx, conversation_id, caller.user_id).await?)?;
    charge_upload(&state, &tx, caller.user_id, upload.size).await?;
    let attachment_id = store(&tx, None, caller.user_id, &upload).await?;
    replace_group_avatar(&tx, conversation_id, Some(attachment_id)).await?;
    tx.commit().await?;
    group_avatar_changed(&state, &conn, conversation_id, caller.user_id).await
}

/// `DELETE /api/conversations/{id}/avatar`: a group admin removes the group's avatar. 200
/// with the conversation; errors as for setting it.
#[utoipa::path(delete, path = "/api/conversations/{id}/avatar", tag = "groups",
    params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 200, description = "The group without an avatar.", body = crate::messaging::model::Conversation)))]
pub async fn delete_group_avatar(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    require_admin(&lock(&tx, conversation_id, caller.user_id).await?)?;
    replace_group_avatar(&tx, conversation_id, None).await?;
    tx.commit().await?;
    group_avatar_changed(&state, &conn, conversation_id, caller.user_id).await
}

/// Points the group at `attachment_id` (or none) and deletes the avatar it replaces.
async fn replace_group_avatar(
    tx: &impl Traced,
    conversation_id: Uuid,
    attachment_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let old: Option<Uuid> = tx
        .query_one_t(
            "WITH old AS (SELECT avatar_id FROM messaging.conversations WHERE id = $1)
             UPDATE messaging.conversations SET avatar_id = $2 WHERE id = $1
             RETURNING (SELECT avatar_id FROM old)",
            &[&conversation_id, &attachment_id],
        )
        .await?
        .get(0);
    if let Some(old) = old.filter(|o| Some(*o) != attachment_id) {
        tx.execute_t("DELETE FROM messaging.attachments WHERE id = $1", &[&old])
            .await?;
    }
    Ok(())
}

/// Announces the group's new avatar and answers with the group as the caller sees it.
async fn group_avatar_changed(
    state: &State,
    conn: &crate::platform::db::Conn,
    conversation_id: Uuid,
    reader: Uuid,
) -> Result<HttpResponse, ApiError> {
    let conversation = load_conversation(conn, conversation_id).await?;
    let frame = ServerFrame::of(
        conversation_id,
        Event::ConversationUpdated(ConversationChanged { conversation }),
    );
    publish_frame(state, conversation_id, None, frame.to_json());
    let conversation = load_conversation_for(conn, conversation_id, reader)
        .await?
        .ok_or_else(crate::messaging::visibility::conversation_not_found)?;
    Ok(consistency::written(state, conn, StatusCode::OK)
        .await?
        .json(conversation))
}

/// `GET /api/conversations/{id}/avatar`: the group's avatar image, to its current
/// participants. 404 when there is none, or for anyone else. Served by the replica.
#[utoipa::path(get, path = "/api/conversations/{id}/avatar", tag = "groups", params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 200, description = "The avatar image (PNG, JPEG, GIF or WebP).", content_type = "image/*", body = Vec<u8>)))]
pub async fn get_group_avatar(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    serve_found(
        &state.db,
        consistency.0,
        format!(
            "SELECT {STORED_COLUMNS} FROM messaging.conversations c
             JOIN messaging.attachments a ON a.id = c.avatar_id
             JOIN messaging.participants p
               ON p.conversation_id = c.id AND p.user_id = $2 AND p.left_at IS NULL
             WHERE c.id = $1"
        ),
        vec![id.into_inner(), caller.user_id],
        range_of(&req),
        "no avatar",
    )
    .await
}

/// `DELETE /api/users/me/avatar`: removes the caller's avatar. 204.
#[utoipa::path(delete, path = "/api/users/me/avatar", tag = "attachments",
    responses((status = 204, description = "Removed (or there was none).")))]
pub async fn delete_avatar(
    state: web::Data<State>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    conn.execute_t(
        "DELETE FROM messaging.attachments
         WHERE id = (SELECT attachment_id FROM messaging.avatars WHERE user_id = $1)",
        &[&caller.user_id],
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/users/{id}/avatar`: the user's avatar image, to any signed-in user. 404 when
/// there is none. Served by the replica.
#[utoipa::path(get, path = "/api/users/{id}/avatar", tag = "attachments", params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "The avatar image (PNG, JPEG, GIF or WebP).", content_type = "image/*", body = Vec<u8>)))]
pub async fn get_avatar(
    state: web::Data<State>,
    _caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    serve_found(
        &state.db,
        consistency.0,
        format!(
            "SELECT {STORED_COLUMNS} FROM messaging.avatars v
             JOIN messaging.attachments a ON a.id = v.attachment_id
             WHERE v.user_id = $1"
        ),
        vec![id.into_inner()],
        range_of(&req),
        "no avatar",
    )
    .await
}
