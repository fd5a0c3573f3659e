//! Edit history (issue 20): each edit keeps the text it replaces (`messaging.message_versions`,
//! migrations/messaging V9); whoever can see the message can read them; a deleted message's
//! versions are removed with its content.

use actix_web::{
    web::{self, Path},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{caller::Caller, visibility::visible_message, State};
use crate::platform::{db::Traced, error::ApiError};

/// Earlier versions one message keeps at most: past them, an edit answers 409 (a message is
/// not a document; and the table cannot grow without bound from one message).
pub const MAX_VERSIONS: i64 = 50;

/// An earlier text of a message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Version {
    /// 1 is the text as sent; each edit adds the next.
    pub version: i32,
    pub content: String,
    /// When this text was written (sent or edited to).
    pub written_at: DateTime<Utc>,
}

/// `GET /api/messages/{id}/versions` answer: the earlier texts, oldest first (the current
/// one is the message's `content`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Versions {
    pub message_id: Uuid,
    pub versions: Vec<Version>,
}

/// `GET /api/messages/{id}/versions`: what an edited message said before, oldest first; empty
/// for a message never edited or deleted. 404 if the caller cannot see the message (a former
/// participant still can, within their range). Read from the primary: versions are written
/// with the edit that a client has just been told of.
#[utoipa::path(get, path = "/api/messages/{id}/versions", tag = "messages", operation_id = "list_versions",
    params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "The earlier texts.", body = Versions)))]
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    let (message, _) = visible_message(&conn, id.into_inner(), caller.user_id).await?;
    let versions = conn
        .query_t(
            "SELECT version, content, written_at FROM messaging.message_versions
             WHERE message_id = $1 ORDER BY version",
            &[&message.id],
        )
        .await?
        .iter()
        .map(|r| Version {
            version: r.get(0),
            content: r.get(1),
            written_at: r.get(2),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Versions {
        message_id: message.id,
        versions,
    }))
}
