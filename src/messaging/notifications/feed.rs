//! The notification feed (issue 19): what happened while one was away — for now, each
//! message that mentioned the user — newest first, with a read state, and a live
//! `notification` event as entries arrive (written by [`super::worker`]).

use actix_web::{
    http::StatusCode,
    web::{self, Json, Query},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::{
    caller::Caller,
    consistency::{self, Consistency},
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// Characters of a message shown in a feed entry.
pub const EXCERPT_CHARS: i32 = 140;

/// One feed entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    /// `mention`: a message named the user (`@username`, or `@all` in a group).
    #[schema(example = "mention")]
    pub kind: String,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    /// Who caused it (the message's sender).
    pub actor_id: Option<Uuid>,
    /// The start of the message (at most 140 characters); null once the user may no longer
    /// see it (removed and added back later, for instance).
    pub excerpt: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Null while unread.
    pub read_at: Option<DateTime<Utc>>,
}

/// The columns [`Notification::from_row`] reads, from `messaging.notifications n` joined
/// with its message `m`.
pub const NOTIFICATION_COLUMNS: &str = "n.id, n.kind, n.conversation_id, n.message_id, n.seq, \
     n.actor_id, left(m.content, 140) AS excerpt, n.created_at, n.read_at";

impl Notification {
    /// Reads a row selected with [`NOTIFICATION_COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            kind: row.get("kind"),
            conversation_id: row.get("conversation_id"),
            message_id: row.get("message_id"),
            seq: row.get("seq"),
            actor_id: row.get("actor_id"),
            excerpt: row.get("excerpt"),
            created_at: row.get("created_at"),
            read_at: row.get("read_at"),
        }
    }
}

/// `GET /api/notifications` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Feed {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// Unread entries in the whole feed.
    pub unread: i64,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<Uuid>,
}

/// `GET /api/notifications` query.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct FeedQuery {
    /// 1–100, default 50.
    pub limit: Option<i64>,
    /// Entries older than this one (the `next_before` of the previous page; another
    /// user's id gives an empty page).
    pub before: Option<Uuid>,
}

/// `GET /api/notifications?limit=&before=`: the caller's feed, newest first, with the unread
/// count. 400 for a `limit` outside 1–100.
#[utoipa::path(get, path = "/api/notifications", operation_id = "list_notifications", tag = "notifications", params(FeedQuery),
    responses((status = 200, description = "The caller's notifications, newest first.", body = Feed)))]
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    query: Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = crate::platform::http::page_size(query.limit, 50, 100)?;
    let before = query.before;
    let user = caller.user_id;
    let (rows, unread) = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let rows = conn
                    .query_t(
                        &format!(
                            "SELECT {NOTIFICATION_COLUMNS}
                             FROM messaging.notifications n
                             LEFT JOIN messaging.participants p
                               ON p.conversation_id = n.conversation_id AND p.user_id = n.user_id
                             -- The text only while it is within what the user may see now.
                             LEFT JOIN messaging.messages m ON m.id = n.message_id
                              AND n.seq >= p.visible_from_seq
                              AND n.seq <= coalesce(p.visible_to_seq, n.seq)
                             WHERE n.user_id = $1
                               AND ($2::uuid IS NULL OR (n.created_at, n.id) < (
                                   SELECT b.created_at, b.id FROM messaging.notifications b
                                   WHERE b.id = $2 AND b.user_id = $1))
                             ORDER BY n.created_at DESC, n.id DESC LIMIT $3"
                        ),
                        &[&user, &before, &(limit + 1)],
                    )
                    .await?;
                let unread: i64 = conn
                    .query_one_t(
                        "SELECT count(*) FROM messaging.notifications
                         WHERE user_id = $1 AND read_at IS NULL",
                        &[&user],
                    )
                    .await?
                    .get(0);
                Ok((rows, unread))
            })
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let notifications: Vec<Notification> = rows
        .iter()
        .take(limit as usize)
        .map(Notification::from_row)
        .collect();
    let next_before = if more {
        notifications.last().map(|n| n.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Feed {
        notifications,
        unread,
        next_before,
    }))
}

/// `POST /api/notifications/read` body: some entries, or all of them.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MarkRead {
    /// These entries (at most 100); others' ids are ignored.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub ids: Vec<Uuid>,
    /// Every entry.
    #[serde(default)]
    pub all: bool,
}

/// `POST /api/notifications/read` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Unread {
    pub unread: i64,
}

/// `POST /api/notifications/read` `{ids}` or `{all: true}`: marks entries read. 200 with the
/// unread count left; 422 for more than 100 ids, or neither `ids` nor `all`.
#[utoipa::path(post, path = "/api/notifications/read", operation_id = "mark_notifications_read", tag = "notifications", request_body = MarkRead,
    responses((status = 200, description = "Marked read.", body = Unread)))]
pub async fn mark_read(
    state: web::Data<State>,
    caller: Caller,
    body: Json<MarkRead>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.ids.len() > 100 || (body.ids.is_empty() && !body.all) {
        return Err(ApiError::invalid_field(
            "ids",
            "give 1 to 100 ids, or all: true",
        ));
    }
    let conn = state.db.primary().await?;
    let unread: i64 = conn
        .query_one_t(
            "WITH marked AS (
                 UPDATE messaging.notifications SET read_at = now()
                 WHERE user_id = $1 AND read_at IS NULL AND ($3 OR id = ANY ($2))
                 RETURNING id
             )
             SELECT count(*) - (SELECT count(*) FROM marked)
             FROM messaging.notifications WHERE user_id = $1 AND read_at IS NULL",
            &[&caller.user_id, &body.ids, &body.all],
        )
        .await?
        .get(0);
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(Unread { unread }))
}
