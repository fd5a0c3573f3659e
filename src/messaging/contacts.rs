//! Contacts online now (issue 20): the people who share a current conversation with the
//! caller and are connected right now (any device, any instance: `messaging.presence`),
//! except those who block the caller — their presence is theirs to hide.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use uuid::Uuid;

use super::{caller::Caller, consistency::Consistency, State};
use crate::platform::{db::Traced, error::ApiError};

/// Most contacts one answer lists.
pub const MAX_ONLINE: i64 = 500;

/// A contact who is online.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OnlineContact {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// `GET /api/contacts/online` answer, by username.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OnlineContacts {
    pub contacts: Vec<OnlineContact>,
}

/// `GET /api/contacts/online`: who among the people sharing a current conversation with the
/// caller is online now, by username (at most 500), leaving out those who block the caller.
/// Served by a replica (presence there lags the primary by the replication delay).
#[utoipa::path(get, path = "/api/contacts/online", tag = "conversations", operation_id = "online_contacts",
    responses((status = 200, description = "Contacts online now.", body = OnlineContacts)))]
pub async fn online(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
) -> Result<HttpResponse, ApiError> {
    let user = caller.user_id;
    let contacts = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                Ok(conn
                    .query_t(
                        "SELECT DISTINCT o.user_id, u.username, u.display_name
                         FROM messaging.participants p
                         JOIN messaging.participants o
                           ON o.conversation_id = p.conversation_id AND o.left_at IS NULL
                          AND o.user_id <> p.user_id
                         JOIN messaging.presence pr ON pr.user_id = o.user_id AND pr.online
                         LEFT JOIN auth.public_profiles u ON u.id = o.user_id
                         WHERE p.user_id = $1 AND p.left_at IS NULL
                           AND NOT EXISTS (SELECT 1 FROM messaging.blocks b
                                           WHERE b.blocker_id = o.user_id AND b.blocked_id = $1)
                         ORDER BY u.username LIMIT $2",
                        &[&user, &MAX_ONLINE],
                    )
                    .await?
                    .iter()
                    .map(|r| OnlineContact {
                        user_id: r.get(0),
                        username: r.get(1),
                        display_name: r.get(2),
                    })
                    .collect::<Vec<_>>())
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(OnlineContacts { contacts }))
}
