//! Read receipts of a message, derived from read markers (no per-message rows).

use crate::platform::db::Traced;
use actix_web::{
    web::{self, Path},
    HttpResponse,
};
use serde::Serialize;
use uuid::Uuid;

use super::{caller::Caller, consistency::Consistency, model, visibility::visible_message, State};
use crate::platform::error::ApiError;

/// One reader in a receipts answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Reader {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// `GET /api/messages/{id}/receipts` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Receipts {
    pub message_id: Uuid,
    pub seq: i64,
    pub read_by: Vec<Reader>,
    pub not_read_by: Vec<Reader>,
}

/// `GET /api/messages/{id}/receipts`: who among the current participants (the sender aside)
/// has read the message — derived from read markers (everyone whose `last_read_seq` ≥ its
/// `seq`), no per-message rows. 200 `{message_id, seq, read_by, not_read_by}`; 404 if the
/// caller cannot see the message. Served by the replica.
#[utoipa::path(get, path = "/api/messages/{id}/receipts", tag = "messages", params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "Who has and has not read it.", body = Receipts)))]
pub async fn receipts(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), caller.user_id);
    let (message, readers) = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let (message, scope) = visible_message(conn, id, user).await?;
                // A former participant sees the receipts as they stood at their departure.
                if !scope.current() {
                    let readers = model::left_roster(conn, message.conversation_id, user)
                        .await?
                        .into_iter()
                        .filter(|r| Some(r.user_id) != message.sender_id)
                        .map(|r| {
                            let read = r.last_read_seq >= message.seq;
                            (
                                Reader {
                                    user_id: r.user_id,
                                    username: r.username,
                                    display_name: r.display_name,
                                },
                                read,
                            )
                        })
                        .collect::<Vec<_>>();
                    return Ok((message, readers));
                }
                let rows = conn
                    .query_t(
                        "SELECT p.user_id, u.username, u.display_name,
                                p.last_read_seq >= $2 AS has_read
                         FROM messaging.participants p
                         LEFT JOIN auth.public_profiles u ON u.id = p.user_id
                         WHERE p.conversation_id = $1 AND p.left_at IS NULL
                           AND p.user_id IS DISTINCT FROM $3
                         ORDER BY u.username",
                        &[&message.conversation_id, &message.seq, &message.sender_id],
                    )
                    .await?;
                let readers = rows
                    .iter()
                    .map(|r| {
                        (
                            Reader {
                                user_id: r.get(0),
                                username: r.get(1),
                                display_name: r.get(2),
                            },
                            r.get::<_, bool>(3),
                        )
                    })
                    .collect::<Vec<_>>();
                Ok((message, readers))
            })
        })
        .await?;
    let (mut read_by, mut not_read_by) = (Vec::new(), Vec::new());
    for (reader, read) in readers {
        if read {
            read_by.push(reader);
        } else {
            not_read_by.push(reader);
        }
    }
    Ok(HttpResponse::Ok().json(Receipts {
        message_id: message.id,
        seq: message.seq,
        read_by,
        not_read_by,
    }))
}
