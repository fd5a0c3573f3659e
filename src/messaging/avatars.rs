//! Avatars: one small image per user, stored like attachments and readable by anyone signed in.

use crate::platform::db::Traced;
use actix_multipart::Multipart;
use actix_web::{
    web::{self, Path},
    HttpRequest, HttpResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    attachments::{charge_upload, read_upload, store, UploadForm, AVATAR_TYPES},
    caller::Caller,
    consistency::Consistency,
    file_serving::{range_of, serve, Stored, STORED_COLUMNS},
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
    let upload = read_upload(body, state.cfg.avatar_max_bytes, false).await?;
    if !AVATAR_TYPES.contains(&upload.content_type.as_str()) {
        return Err(ApiError::invalid_field(
            "file",
            "an avatar must be a PNG, JPEG, GIF or WebP image",
        ));
    }
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
    let (id, range) = (id.into_inner(), range_of(&req));
    state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            let range = range.clone();
            Box::pin(async move {
                let row = conn
                    .query_opt_t(
                        &format!(
                            "SELECT {STORED_COLUMNS} FROM messaging.avatars v
                             JOIN messaging.attachments a ON a.id = v.attachment_id
                             WHERE v.user_id = $1"
                        ),
                        &[&id],
                    )
                    .await?
                    .ok_or_else(|| ApiError::NotFound("no avatar".into()))?;
                serve(conn, &Stored::from_row(&row), range.as_deref()).await
            })
        })
        .await
}
