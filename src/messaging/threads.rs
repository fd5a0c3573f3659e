//! Threads (issue 20): a send with `thread_root_id` replies in the thread under a top-level
//! message. Replies share the conversation's `seq` and go through group commit like every
//! send (which keeps the root's summary and the followers in the same statement:
//! [`super::group_commit::APPEND_BATCH`]); the main history leaves them out. Whoever wrote the
//! root or replied follows the thread (`messaging.thread_reads`, migrations/messaging V11):
//! replies by others after their thread read marker are unread, counted in the conversation
//! list as `thread_unread_count`, apart from `unread_count`.

use actix_web::{
    web::{self, Json, Path, Query},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    caller::Caller,
    consistency::{self, Consistency},
    conversations::page_limit,
    model::{message_columns_seen_from, my_reactions_column, Message, ThreadSummary, MESSAGE_FROM},
    protocol::{Event, ServerFrame},
    publish::publish_seen_frame,
    visibility::{self, visible_message},
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// SQL: replies by others in the threads of conversation `c` that the user `$1` follows,
/// after their thread read markers and within their visible range (participant row `p`),
/// leaving out the threads whose root they cannot see and the replies of anyone they block.
pub const UNREAD_IN_FOLLOWED: &str = "(SELECT count(*) FROM messaging.thread_reads tr
     JOIN messaging.messages rt ON rt.id = tr.root_id AND rt.seq >= p.visible_from_seq
     JOIN messaging.messages t ON t.thread_root_id = tr.root_id
      AND NOT EXISTS (SELECT 1 FROM messaging.blocks b
                      WHERE b.blocker_id = tr.user_id AND b.blocked_id = t.sender_id)
      AND t.seq > GREATEST(tr.last_read_seq, p.visible_from_seq - 1)
      AND t.seq <= coalesce(p.visible_to_seq, c.last_seq)
      AND t.sender_id IS DISTINCT FROM tr.user_id
     WHERE tr.user_id = $1 AND tr.conversation_id = c.id)";

/// `thread.updated`'s data: a root's summary after a reply.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThreadUpdated {
    pub root_id: Uuid,
    #[serde(flatten)]
    pub summary: ThreadSummary,
}

/// Announces a root's new summary after `reply` (to those who can see the root). Not a
/// stored change of the root (no revision): a `resume` brings the replies themselves, and
/// history the root's current summary.
pub fn announce(
    state: &State,
    reply: &Message,
    root_id: Uuid,
    root_seq: i64,
    summary: ThreadSummary,
) {
    let frame = ServerFrame::of(
        reply.conversation_id,
        Event::ThreadUpdated(ThreadUpdated { root_id, summary }),
    )
    .at(Some(root_seq));
    publish_seen_frame(state, reply.conversation_id, root_seq, frame.to_json());
}

/// `GET /api/messages/{id}/thread` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadQuery {
    /// Only replies with a larger `seq` (the page is oldest first).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A page of a thread.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadPage {
    pub root: Message,
    /// Oldest first, after `after`.
    pub replies: Vec<Message>,
    pub has_more: bool,
    /// The caller's thread read marker (0 when they do not follow it).
    pub last_read_seq: i64,
    /// Replies by others after that marker.
    pub unread_count: i64,
}

/// `GET /api/messages/{id}/thread?after=&limit=`: the thread under root `id` (a reply's id
/// gives its thread), replies oldest first within what the caller can see. 404 if the caller
/// cannot see the root. Served by a replica (read-your-writes).
#[utoipa::path(get, path = "/api/messages/{id}/thread", tag = "messages",
    params(("id" = Uuid, Path, description = "the root (or a reply in the thread)"), ThreadQuery),
    responses((status = 200, description = "The root and a page of its replies.", body = ThreadPage)))]
pub async fn thread(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
    query: Query<ThreadQuery>,
) -> Result<HttpResponse, ApiError> {
    static REPLIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {columns}, {mine} FROM {MESSAGE_FROM}
             WHERE m.thread_root_id = $1 AND m.seq > $3
               AND m.seq >= $4 AND ($5::bigint IS NULL OR m.seq <= $5)
             ORDER BY m.seq LIMIT $6",
            columns = message_columns_seen_from("$4"),
            mine = my_reactions_column("$2"),
        )
    });
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadRequest("after must be zero or more".into()));
    }
    let (id, user) = (id.into_inner(), caller.user_id);
    let page = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let (root, scope) = visible_root(conn, id, user).await?;
                let rows = conn
                    .query_t(
                        REPLIES.as_str(),
                        &[
                            &root.id,
                            &user,
                            &after,
                            &scope.visible_from_seq,
                            &scope.visible_to_seq,
                            &(limit + 1),
                        ],
                    )
                    .await?;
                let marker = conn
                    .query_one_t(
                        "SELECT coalesce((SELECT last_read_seq FROM messaging.thread_reads
                                          WHERE user_id = $2 AND root_id = $1), 0),
                                (SELECT count(*) FROM messaging.messages t
                                 WHERE t.thread_root_id = $1 AND t.sender_id IS DISTINCT FROM $2
                                   AND t.seq > coalesce((SELECT last_read_seq FROM messaging.thread_reads
                                                         WHERE user_id = $2 AND root_id = $1), 0)
                                   AND t.seq >= $3 AND ($4::bigint IS NULL OR t.seq <= $4))",
                        &[&root.id, &user, &scope.visible_from_seq, &scope.visible_to_seq],
                    )
                    .await?;
                let has_more = rows.len() as i64 > limit;
                let replies = rows
                    .iter()
                    .take(limit as usize)
                    .map(|r| scope.show(Message::from_row(r)))
                    .collect();
                Ok(ThreadPage {
                    root,
                    replies,
                    has_more,
                    last_read_seq: marker.get(0),
                    unread_count: marker.get(1),
                })
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The root of the thread `id` is in (or `id` itself), as the caller sees it.
///
/// Errors: 404 if the caller cannot see it.
async fn visible_root(
    db: &impl Traced,
    id: Uuid,
    user: Uuid,
) -> Result<(Message, visibility::Scope), ApiError> {
    let (message, scope) = visible_message(db, id, user).await?;
    match message.thread_root_id {
        Some(root) => visible_message(db, root, user).await,
        None => Ok((message, scope)),
    }
}

/// `POST /api/messages/{id}/thread/read` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ThreadRead {
    /// Every reply up to this `seq` has been read.
    #[schema(minimum = 0)]
    pub seq: i64,
}

/// The caller's thread read marker.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadMarker {
    pub root_id: Uuid,
    pub last_read_seq: i64,
    /// Replies by others after it.
    pub unread_count: i64,
    pub read_at: DateTime<Utc>,
}

/// `POST /api/messages/{id}/thread/read` `{seq}`: moves the caller's read marker of the thread
/// under root `id` forward (they follow it from then on). 200 with the marker. 404 if they
/// cannot see the root or are no longer in the conversation; 422 for a negative `seq`.
#[utoipa::path(post, path = "/api/messages/{id}/thread/read", tag = "messages",
    params(("id" = Uuid, Path, description = "the thread's root")),
    request_body = ThreadRead,
    responses((status = 200, description = "The caller's thread read marker.", body = ThreadMarker)))]
pub async fn read(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<ThreadRead>,
) -> Result<HttpResponse, ApiError> {
    if body.seq < 0 {
        return Err(ApiError::invalid_field("seq", "must be zero or more"));
    }
    let conn = state.db.primary().await?;
    let (root, scope) = visible_root(&conn, id.into_inner(), caller.user_id).await?;
    if !scope.current() {
        return Err(visibility::message_not_found());
    }
    let row = conn
        .query_one_t(
            "WITH moved AS (
                 INSERT INTO messaging.thread_reads AS tr (user_id, root_id, conversation_id, last_read_seq)
                 VALUES ($2, $1, $3, $4)
                 ON CONFLICT (user_id, root_id) DO UPDATE
                     SET last_read_seq = GREATEST(tr.last_read_seq, EXCLUDED.last_read_seq)
                 RETURNING last_read_seq
             )
             SELECT moved.last_read_seq,
                    (SELECT count(*) FROM messaging.messages t
                     WHERE t.thread_root_id = $1 AND t.sender_id IS DISTINCT FROM $2
                       AND t.seq > moved.last_read_seq AND t.seq >= $5),
                    now()
             FROM moved",
            &[
                &root.id,
                &caller.user_id,
                &root.conversation_id,
                &body.seq,
                &scope.visible_from_seq,
            ],
        )
        .await?;
    let marker = ThreadMarker {
        root_id: root.id,
        last_read_seq: row.get(0),
        unread_count: row.get(1),
        read_at: row.get(2),
    };
    Ok(
        consistency::written(&state, &conn, actix_web::http::StatusCode::OK)
            .await?
            .json(marker),
    )
}
