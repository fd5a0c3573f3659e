//! Full-text search over the messages a caller can see (PostgreSQL docs ch. 12, "Full Text
//! Search"): a GIN index on a generated `tsvector`, `websearch_to_tsquery` for the query
//! syntax people type (words, "phrases", -exclusions, or), ranked by `ts_rank`.

use crate::platform::db::Traced;
use actix_web::{
    web::{self, Query},
    HttpResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    caller::Caller,
    consistency::Consistency,
    model::{Message, MESSAGE_COLUMNS},
    visibility::any_scope,
    State,
};
use crate::platform::error::ApiError;

/// `GET /api/search` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Search text, 1–200 characters (`websearch_to_tsquery` syntax).
    #[param(min_length = 1, max_length = 200)]
    pub q: String,
    /// Only this conversation.
    pub conversation_id: Option<Uuid>,
    /// Page size 1–50, default 20.
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
    /// Results to skip (from a previous page's `next_offset`), at most 1000.
    #[param(minimum = 0, maximum = 1000)]
    pub offset: Option<i64>,
}

/// One search result.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub message: Message,
    pub rank: f32,
    /// The matching passage with matches between `<b>` and `</b>`; the rest is the
    /// message text as sent (escape it before rendering as HTML).
    pub highlight: Option<String>,
}

/// `GET /api/search` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub results: Vec<Hit>,
    /// Pass as `offset` for the next page; null on the last.
    pub next_offset: Option<i64>,
}

/// `GET /api/search?q=&conversation_id=&limit=&offset=`: 200 `{results: [{message, rank,
/// highlight}], next_offset}` — best first — among text and file messages in conversations
/// the caller is or was in, limited to the part of history they could see; deleted messages
/// are not indexed. Served by the replica (read-your-writes). 400 for a bad `q`, `limit` or
/// `offset`; 404 for a `conversation_id` the caller never was in.
#[utoipa::path(get, path = "/api/search", tag = "messages", params(SearchQuery),
    responses((status = 200, description = "Matching messages the caller can see, best first.", body = SearchResults)))]
pub async fn search(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    query: Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.q.trim();
    let n = q.chars().count();
    if n == 0 || n > 200 || q.contains('\0') {
        return Err(ApiError::BadRequest("q must be 1 to 200 characters".into()));
    }
    let limit = crate::platform::http::page_size(query.limit, 20, 50)?;
    let offset = match query.offset {
        None => 0,
        Some(o) if (0..=1000).contains(&o) => o,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "offset must be between 0 and 1000".into(),
            ))
        }
    };
    let (user, only, q) = (caller.user_id, query.conversation_id, q.to_owned());
    let rows = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            let q = q.clone();
            Box::pin(async move {
                if let Some(c) = only {
                    any_scope(conn, c, user).await?;
                }
                Ok(conn
                    .query_t(
                        &format!(
                            "SELECT {MESSAGE_COLUMNS}, ts_rank(m.search, q) AS rank,
                        ts_headline('simple', m.content, q,
                                    'MaxFragments=1, MaxWords=24, MinWords=8') AS highlight
                 FROM messaging.participants p
                 JOIN messaging.messages m ON m.conversation_id = p.conversation_id
                 LEFT JOIN messaging.messages pm
                        ON pm.id = m.reply_to AND pm.seq >= p.visible_from_seq
                 LEFT JOIN messaging.attachments a ON a.id = m.attachment_id
                 CROSS JOIN websearch_to_tsquery('simple', $2) AS q
                 WHERE p.user_id = $1
                   AND m.search @@ q AND m.kind <> 'system' AND m.deleted_at IS NULL
                   AND m.seq >= p.visible_from_seq
                   AND (p.visible_to_seq IS NULL OR m.seq <= p.visible_to_seq)
                   AND ($3::uuid IS NULL OR m.conversation_id = $3)
                 ORDER BY rank DESC, m.created_at DESC, m.id DESC
                 LIMIT $4 OFFSET $5"
                        ),
                        &[&user, &q, &only, &(limit + 1), &offset],
                    )
                    .await?)
            })
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let results: Vec<Hit> = rows
        .iter()
        .take(limit as usize)
        .map(|r| Hit {
            message: Message::from_row(r),
            rank: r.get("rank"),
            highlight: r.get("highlight"),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SearchResults {
        results,
        next_offset: more.then_some(offset + limit),
    }))
}
