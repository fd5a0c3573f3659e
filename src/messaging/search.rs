//! Full-text search over the messages a caller can see (PostgreSQL docs ch. 12, "Full Text
//! Search"): a GIN index on a generated `tsvector`, `websearch_to_tsquery` for the query
//! syntax people type (words, "phrases", -exclusions, or), ranked by `ts_rank`; with the
//! filters people type beside the words ([`Filters`]: `from:`, `in:`, `has:file`, `before:`,
//! `after:`).

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
    model::{message_columns_seen_from, Message},
    visibility::any_scope,
    State,
};
use crate::platform::error::ApiError;

/// `GET /api/search` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Search text, 1–200 characters (`websearch_to_tsquery` syntax), with any of the filters
    /// `from:<username>`, `in:<group name | @username | conversation id>`, `has:file`,
    /// `before:YYYY-MM-DD`, `after:YYYY-MM-DD` (dates in UTC; `before` excludes that day).
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

/// The filters of a search text, and the words left for full-text search.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub words: String,
    /// `from:alice` (an `@` before the name is fine).
    pub from: Option<String>,
    /// `in:` a conversation id …
    pub in_id: Option<Uuid>,
    /// … or a group's name, or `@username` for a direct conversation.
    pub in_name: Option<String>,
    /// `has:file`: file messages only.
    pub has_file: bool,
    /// `before:2026-11-30`: sent before that day (UTC).
    pub before: Option<chrono::NaiveDate>,
    /// `after:2026-11-30`: sent on or after that day (UTC).
    pub after: Option<chrono::NaiveDate>,
}

impl Filters {
    /// Splits `q` into filters and words (anything that is not a known `key:value` is a word).
    ///
    /// Errors: a filter with an unusable value (`has:` other than `file`, a bad date, an empty
    /// value), or nothing to search for at all.
    pub fn parse(q: &str) -> Result<Self, String> {
        let mut f = Self::default();
        let mut words = Vec::new();
        for token in q.split_whitespace() {
            let date = |v: &str| {
                chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map_err(|_| format!("{token}: dates are YYYY-MM-DD"))
            };
            match token.split_once(':') {
                Some(("from" | "in" | "has" | "before" | "after", "")) => {
                    return Err(format!("{token} needs a value"))
                }
                Some(("from", v)) => f.from = Some(v.trim_start_matches('@').to_owned()),
                Some(("in", v)) => match v.parse::<Uuid>() {
                    Ok(id) => f.in_id = Some(id),
                    Err(_) => f.in_name = Some(v.to_owned()),
                },
                Some(("has", "file")) => f.has_file = true,
                Some(("has", _)) => return Err(format!("{token}: only has:file is known")),
                Some(("before", v)) => f.before = Some(date(v)?),
                Some(("after", v)) => f.after = Some(date(v)?),
                _ => words.push(token),
            }
        }
        f.words = words.join(" ");
        if f == Self::default() {
            return Err("nothing to search for".into());
        }
        Ok(f)
    }
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
    let filters = Filters::parse(q).map_err(ApiError::BadRequest)?;
    let (user, only) = (caller.user_id, query.conversation_id);
    let day =
        |d: Option<chrono::NaiveDate>| d.and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    let (before, after) = (day(filters.before), day(filters.after));
    let filters = std::sync::Arc::new(filters);
    let rows = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            let f = filters.clone();
            Box::pin(async move {
                if let Some(c) = only {
                    any_scope(conn, c, user).await?;
                }
                Ok(conn
                    .query_t(
                        &format!(
                            "SELECT {columns}, ts_rank(m.search, q) AS rank,
                        p.visible_to_seq IS NOT NULL AS former,
                        ts_headline('simple', m.content, q,
                                    'MaxFragments=1, MaxWords=24, MinWords=8') AS highlight
                 FROM messaging.participants p
                 JOIN messaging.messages m ON m.conversation_id = p.conversation_id
                 CROSS JOIN websearch_to_tsquery('simple', $2) AS q
                 WHERE p.user_id = $1
                   AND ($2 = '' OR m.search @@ q) AND m.kind <> 'system' AND m.deleted_at IS NULL
                   AND m.seq >= p.visible_from_seq
                   AND (p.visible_to_seq IS NULL OR m.seq <= p.visible_to_seq)
                   AND ($3::uuid IS NULL OR m.conversation_id = $3)
                   AND ($6::text IS NULL OR m.sender_id = (
                        SELECT u.id FROM auth.public_profiles u WHERE lower(u.username) = lower($6)))
                   AND ($7::uuid IS NULL OR m.conversation_id = $7)
                   AND ($8::text IS NULL OR m.conversation_id IN (
                        SELECT p2.conversation_id FROM messaging.participants p2
                        JOIN messaging.conversations c2 ON c2.id = p2.conversation_id
                        LEFT JOIN messaging.participants o2
                               ON NOT c2.is_group AND o2.conversation_id = c2.id
                              AND o2.user_id <> $1
                        LEFT JOIN auth.public_profiles u2 ON u2.id = o2.user_id
                        WHERE p2.user_id = $1
                          AND (lower(CASE WHEN p2.left_at IS NULL THEN c2.name
                                          ELSE p2.left_name END) = lower($8)
                               OR ('@' || lower(u2.username)) = lower($8))))
                   AND (NOT $9 OR m.kind = 'file')
                   AND ($10::timestamptz IS NULL OR m.created_at < $10)
                   AND ($11::timestamptz IS NULL OR m.created_at >= $11)
                 ORDER BY rank DESC, m.created_at DESC, m.id DESC
                 LIMIT $4 OFFSET $5",
                            columns = message_columns_seen_from("p.visible_from_seq"),
                        ),
                        &[
                            &user,
                            &f.words,
                            &only,
                            &(limit + 1),
                            &offset,
                            &f.from,
                            &f.in_id,
                            &f.in_name,
                            &f.has_file,
                            &before,
                            &after,
                        ],
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
            message: if r.get("former") {
                Message::from_row(r).seen_as_former()
            } else {
                Message::from_row(r)
            },
            rank: r.get("rank"),
            highlight: r.get("highlight"),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SearchResults {
        results,
        next_offset: more.then_some(offset + limit),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_come_out_of_the_words() -> Result<(), String> {
        let f = Filters::parse("launch from:@alice in:Team has:file after:2026-01-02 plan")?;
        assert_eq!(f.words, "launch plan");
        assert_eq!(f.from.as_deref(), Some("alice"));
        assert_eq!(f.in_name.as_deref(), Some("Team"));
        assert!(f.has_file);
        assert_eq!(f.after, chrono::NaiveDate::from_ymd_opt(2026, 1, 2));
        let id = Uuid::nil();
        assert_eq!(Filters::parse(&format!("in:{id}"))?.in_id, Some(id));
        // Unknown keys and colons in words stay words.
        assert_eq!(
            Filters::parse("time 10:30 re:launch")?.words,
            "time 10:30 re:launch"
        );
        for bad in ["has:image", "before:yesterday", "from:", "   "] {
            assert!(Filters::parse(bad).is_err(), "{bad} taken");
        }
        Ok(())
    }
}
