//! Message handlers: send with idempotent retries and the send rate limit, edit, delete,
//! history pages, and the read marker by message. Appending is [`super::append`],
//! publishing [`super::publish`], receipts [`super::receipts`].

use crate::platform::db::{Conn, Traced};
use actix_web::{
    http::StatusCode,
    web::{self, Json, Path, Query},
    HttpRequest, HttpResponse,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    append::next_rev,
    group_commit::{NewSend, Outcome},
    protocol::MessageEvent,
    publish::{publish_message, publish_message_to},
};
use super::{
    budget::{self, Budget},
    caller::Caller,
    consistency::{self, Consistency},
    conversations::{mark_read, page_limit},
    delivered::mark_delivered,
    domain::{MessageContent, MessageKind},
    mentions::{self, Mentions},
    model::{
        load_message, my_reactions_column, page_columns_seen_from, Message, MessageColumnIndex,
        MessageOf, MESSAGE_COLUMNS, MESSAGE_FROM,
    },
    versions::MAX_VERSIONS,
    visibility::{self, conversation_not_found, current_scope, visible_message},
    State,
};
use crate::platform::error::{field, ApiError, FieldErrors};
use crate::platform::http::json_body;

/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// Counts one send against the caller's budget (`SEND_RATE_LIMIT` per
/// `SEND_RATE_WINDOW_SECS`, shared by every instance: see [`super::budget`]).
///
/// Errors: 429 with `Retry-After` (seconds to the next window) past the limit.
pub async fn check_send_rate(
    state: &State,
    db: &impl Traced,
    user_id: Uuid,
) -> Result<(), ApiError> {
    budget::spend(
        db,
        user_id,
        Budget::Send,
        1,
        i64::from(state.cfg.send_rate_limit),
        state.cfg.send_rate_window,
        || {
            budget::send_detail(
                i64::from(state.cfg.send_rate_limit),
                state.cfg.send_rate_window,
            )
        },
    )
    .await
}

/// `POST /api/conversations/{id}/messages` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SendMessage {
    /// 1 to `MESSAGE_MAX_CHARS` (4000) characters, not blank, no NUL.
    #[schema(min_length = 1, max_length = 4000, example = "hello")]
    pub content: String,
    /// A message of the same conversation that the caller can see.
    pub reply_to: Option<Uuid>,
    /// Client-chosen idempotency key, 1–64 characters: a retry with the same one returns
    /// the same message.
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: Option<String>,
    /// `normal` (default), `important` or `urgent` (notifies even where muted).
    #[serde(default)]
    pub priority: super::domain::Priority,
    /// Reply in a thread: its root (a top-level message the caller can see), or any reply in
    /// it. Thread replies stay out of the main history (see `GET /api/messages/{id}/thread`).
    pub thread_root_id: Option<Uuid>,
}

/// Checks a `client_id`: 1–64 printable characters.
pub fn validate_client_id(client_id: Option<&str>, errors: &mut FieldErrors) {
    if let Some(c) = client_id {
        let n = c.chars().count();
        if n == 0 || n > MAX_CLIENT_ID_CHARS || c.chars().any(char::is_control) {
            errors
                .entry("client_id".into())
                .or_default()
                .push("must be 1 to 64 printable characters".into());
        }
    }
}

/// `POST /api/conversations/{id}/messages`: 201 with the message, committed on the primary;
/// 200 with the original when `client_id` repeats an earlier send. 404 if the caller is not a
/// participant; 422 for invalid content or a `reply_to` outside the conversation (or outside
/// what the caller can see); 429 past the send rate limit.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "messages", params(("id" = Uuid, Path, description = "conversation id")),
    request_body = SendMessage,
    responses((status = 201, description = "Sent (committed on the primary).", body = Message,
            headers(("X-Consistency-Token" = String, description = "read-your-writes token: echo it on reads (browsers get the ryw_lsn cookie)"))),
        (status = 200, description = "A retry with a client_id already used here: the original message.", body = Message)))]
pub async fn send(
    req: HttpRequest,
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<SendMessage>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    let content = field(
        &mut errors,
        "content",
        MessageContent::parse(body.content, state.cfg.message_max_chars),
    );
    validate_client_id(body.client_id.as_deref(), &mut errors);
    ApiError::check(errors)?;
    let Some(content) = content else {
        return Err(anyhow::anyhow!("content parsed with errors unrecorded").into());
    };

    let sent = state
        .sends
        .submit(
            NewSend {
                conversation_id,
                sender_id: caller.user_id,
                content,
                reply_to: body.reply_to,
                client_id: body.client_id.clone(),
                priority: body.priority,
                thread_root: body.thread_root_id,
            },
            crate::platform::queue_time::arrived_at(&req),
        )
        .await?;
    match sent.outcome {
        Outcome::Created {
            message,
            audience,
            thread,
        } => {
            publish_message_to(&state, MessageEvent::Created, &message, audience);
            if let (Some(root_id), Some((root_seq, summary))) = (message.thread_root_id, thread) {
                super::threads::announce(&state, &message, root_id, root_seq, summary);
            }
            let mut res = HttpResponse::Created();
            consistency::attach(&state, &mut res, sent.lsn);
            Ok(res.json(message))
        }
        Outcome::Repeated => {
            // The client_id was used before (a retry): the original, as the caller sees it.
            let conn = state.db.primary().await?;
            let scope = current_scope(&conn, conversation_id, caller.user_id).await?;
            let existing = by_client_id(
                &conn,
                conversation_id,
                caller.user_id,
                body.client_id.as_deref(),
                scope.visible_from_seq,
            )
            .await?
            .ok_or_else(|| ApiError::Conflict("client_id is being used by another send".into()))?;
            answer(&state, &conn, &existing, StatusCode::OK).await
        }
    }
}

/// The message `sender` already appended to `conversation_id` with `client_id` (a retry), as
/// a reader whose range starts at `visible_from` sees it; `None` without a `client_id`.
///
/// Errors: the query fails.
pub(super) async fn by_client_id(
    conn: &Conn,
    conversation_id: Uuid,
    sender: Uuid,
    client_id: Option<&str>,
    visible_from: i64,
) -> Result<Option<Message>, ApiError> {
    let Some(client_id) = client_id else {
        return Ok(None);
    };
    let row = conn
        .query_opt_t(
            &format!(
                "SELECT {} FROM {MESSAGE_FROM}
                 WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_id = $3
                   AND m.seq >= $4",
                MESSAGE_COLUMNS.as_str()
            ),
            &[&conversation_id, &sender, &client_id, &visible_from],
        )
        .await?;
    Ok(row
        .as_ref()
        .map(|r| Message::from_row(r).seen_from(visible_from)))
}

/// A write's answer: `status` with the message and the consistency token.
pub async fn answer(
    state: &State,
    conn: &Conn,
    message: &Message,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    Ok(consistency::written(state, conn, status)
        .await?
        .json(message))
}

/// A write's answer about message `id`, loaded again as `reader` (whose visible range starts
/// at `visible_from`) sees it now: 200 with the message and the consistency token.
///
/// Errors: 404 if it is gone; the query fails.
pub async fn answer_with(
    state: &State,
    conn: &Conn,
    id: Uuid,
    reader: Uuid,
    visible_from: i64,
) -> Result<HttpResponse, ApiError> {
    let message = super::model::load_message_for(conn, id, reader)
        .await?
        .ok_or_else(visibility::message_not_found)?
        .seen_from(visible_from);
    answer(state, conn, &message, StatusCode::OK).await
}

/// `PATCH /api/messages/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EditMessage {
    /// 1 to `MESSAGE_MAX_CHARS` (4000) characters, not blank, no NUL.
    #[schema(min_length = 1, max_length = 4000)]
    pub content: String,
}

/// `PATCH /api/messages/{id}`: the sender replaces the content (text, or a file's caption)
/// within `MESSAGE_EDIT_WINDOW_SECS` of sending; `edited_at` is set and `message.edited` is
/// announced. 200 with the message. 404 if the caller cannot see it; 403 for someone else's
/// message, a system message, a sender no longer in the conversation, or a closed edit
/// window; 409 for a deleted message; 422 for invalid content.
#[utoipa::path(patch, path = "/api/messages/{id}", tag = "messages", params(("id" = Uuid, Path, description = "message id")),
    request_body = EditMessage,
    responses((status = 200, description = "The edited message.", body = Message)))]
pub async fn edit(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<EditMessage>,
) -> Result<HttpResponse, ApiError> {
    let content = MessageContent::parse(body.into_inner().content, state.cfg.message_max_chars)
        .map_err(|m| ApiError::invalid("content", m))?;
    let mut conn = state.db.primary().await?;
    let (message, scope) = visible_message(&conn, id.into_inner(), caller.user_id).await?;
    if message.sender_id != Some(caller.user_id) || message.kind == MessageKind::System {
        return Err(ApiError::Forbidden(
            "only the sender can edit a message".into(),
        ));
    }
    scope.writable()?;
    if message.deleted {
        return Err(ApiError::Conflict("the message was deleted".into()));
    }
    let window = chrono::Duration::from_std(state.cfg.edit_window).unwrap_or_default();
    if Utc::now() - message.created_at > window {
        return Err(ApiError::Forbidden(format!(
            "messages can be edited for {} s after sending",
            state.cfg.edit_window.as_secs()
        )));
    }
    let mentioned = Mentions::of(content.as_str());
    let tx = conn.transaction().await?;
    let rev = next_rev(&tx, message.conversation_id).await?;
    // The text being replaced becomes the next earlier version (edits of one conversation
    // queue on its row lock, just taken, so versions are numbered without gaps).
    if tx
        .execute_t(SAVE_VERSION, &[&message.id, &MAX_VERSIONS])
        .await?
        == 0
    {
        return Err(ApiError::Conflict(format!(
            "a message can be edited at most {MAX_VERSIONS} times"
        )));
    }
    let updated = tx
        .execute_t(
            // After next_rev took the conversation's row lock, so this statement's snapshot
            // sees any removal that committed meanwhile (READ COMMITTED, docs §13.2.1).
            // Mentions are resolved again for the new text (against the participants now).
            &EDIT_MESSAGE,
            &[
                &message.id,
                &content.as_str(),
                &rev,
                &caller.user_id,
                &mentioned.names.join(" "),
                &mentioned.all,
                &state.cfg.mention_all_members,
            ],
        )
        .await?;
    if updated == 0 {
        return Err(ApiError::Conflict(
            "the message was deleted, or you are no longer in this conversation".into(),
        ));
    }
    // The mention rows follow the text; the notification work runs again for it (who was
    // told already is not told twice: see `notifications`).
    // (Two statements: sub-statements of one WITH see the same snapshot, so a delete and a
    // re-insert of a surviving mention there would cancel out.)
    tx.execute_t(
        "DELETE FROM messaging.mentions WHERE conversation_id = $1 AND seq = $2",
        &[&message.conversation_id, &message.seq],
    )
    .await?;
    tx.execute_t(
        "WITH added AS (
             INSERT INTO messaging.mentions (user_id, conversation_id, seq)
             SELECT u.id, m.conversation_id, m.seq
             FROM messaging.messages m, unnest(m.mentions) AS u(id)
             WHERE m.id = $1 AND NOT EXISTS (
                 SELECT 1 FROM messaging.blocks bl
                 WHERE bl.blocker_id = u.id AND bl.blocked_id = m.sender_id)
         )
         INSERT INTO messaging.notify_queue (message_id, conversation_id, seq)
         VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
        &[&message.id, &message.conversation_id, &message.seq],
    )
    .await?;
    tx.commit().await?;
    let reactions = message.reactions;
    let message = load_message(&conn, message.id)
        .await?
        .ok_or_else(visibility::message_not_found)?;
    publish_message(&state, MessageEvent::Edited, &message);
    // An edit leaves the reactions as they were: the caller's answer keeps their `me`.
    let message = Message {
        reactions,
        ..message.seen_from(scope.visible_from_seq)
    };
    answer(&state, &conn, &message, StatusCode::OK).await
}

/// Keeps the current text of message `$1` as its next earlier version, with the time it was
/// written (see `GET /api/messages/{id}/versions`, [`super::versions`]) — unless it has `$2`
/// versions already (then nothing is inserted).
const SAVE_VERSION: &str =
    "INSERT INTO messaging.message_versions (message_id, version, content, written_at)
     SELECT m.id,
            coalesce((SELECT max(v.version) FROM messaging.message_versions v
                      WHERE v.message_id = m.id), 0) + 1,
            m.content, coalesce(m.edited_at, m.created_at)
     FROM messaging.messages m
     WHERE m.id = $1 AND m.deleted_at IS NULL AND m.content IS NOT NULL
       AND (SELECT count(*) FROM messaging.message_versions v WHERE v.message_id = m.id) < $2";

/// An edit by its sender (`$4`, still a participant): the text (`$2`), the revision (`$3`),
/// and the mentions resolved again (`$5` names, `$6` `@all`, `$7` whether members may).
static EDIT_MESSAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE messaging.messages m SET content = $2, edited_at = now(), rev = $3,
             mentions = {mentions}, mentions_all = {mentions_all}
         FROM messaging.conversations c, messaging.participants sp
         WHERE m.id = $1 AND m.deleted_at IS NULL AND c.id = m.conversation_id
           AND NOT c.blocked AND sp.conversation_id = m.conversation_id AND sp.user_id = $4
           AND sp.left_at IS NULL",
        mentions = mentions::resolve_sql("m.conversation_id", "$4", "$5::text"),
        mentions_all = mentions::all_sql("$6::bool", "c.is_group", "sp.role", "$7::bool"),
    )
});

/// `DELETE /api/messages/{id}`: by the sender, or by a group admin. The content (and the
/// file of a file message) is removed from storage and from search; the tombstone keeps its
/// `seq`, with `deleted: true`. `message.deleted` is announced. 204, also when it was
/// already deleted. 404 if the caller cannot see it; 403 otherwise not allowed.
#[utoipa::path(delete, path = "/api/messages/{id}", tag = "messages", params(("id" = Uuid, Path, description = "message id")),
    responses((status = 204, description = "Deleted: the content is gone, the tombstone keeps its seq.")))]
pub async fn delete(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.primary().await?;
    let (message, scope) = visible_message(&conn, id.into_inner(), caller.user_id).await?;
    let own = message.sender_id == Some(caller.user_id) && message.kind != MessageKind::System;
    let as_admin = scope.is_group && scope.admin && scope.current();
    if !(own || as_admin) || message.kind == MessageKind::System {
        return Err(ApiError::Forbidden(
            "only the sender or a group admin can delete a message".into(),
        ));
    }
    if !message.deleted {
        let tx = conn.transaction().await?;
        let rev = next_rev(&tx, message.conversation_id).await?;
        // An admin's right is checked again after next_rev took the conversation's row
        // lock (this statement's snapshot sees any demotion or removal committed meanwhile).
        let old_attachment: Option<Uuid> = tx
            .query_opt_t(
                "WITH old AS (SELECT attachment_id FROM messaging.messages WHERE id = $1 FOR UPDATE)
                 UPDATE messaging.messages m
                 SET content = NULL, attachment_id = NULL, deleted_at = now(), rev = $2,
                     mentions = '{}', mentions_all = false, reactions = NULL,
                     pinned_at = NULL, pinned_by = NULL
                 FROM old WHERE m.id = $1
                   AND ($3 OR EXISTS (SELECT 1 FROM messaging.participants p
                                      WHERE p.conversation_id = m.conversation_id
                                        AND p.user_id = $4 AND p.left_at IS NULL
                                        AND p.role = 'admin'))
                 RETURNING old.attachment_id",
                &[&message.id, &rev, &own, &caller.user_id],
            )
            .await?
            .ok_or_else(|| {
                ApiError::Forbidden("only the sender or a group admin can delete a message".into())
            })?
            .get(0);
        if let Some(a) = old_attachment {
            // The file goes with its last message (forwarded copies refer to the same one).
            tx.execute_t(
                "DELETE FROM messaging.attachments a WHERE a.id = $1
                 AND NOT EXISTS (SELECT 1 FROM messaging.messages m WHERE m.attachment_id = a.id)",
                &[&a],
            )
            .await?;
        }
        // Its earlier texts and its reactions go with its content.
        tx.execute_t(
            "WITH v AS (DELETE FROM messaging.message_versions WHERE message_id = $1)
             DELETE FROM messaging.reactions WHERE message_id = $1",
            &[&message.id],
        )
        .await?;
        // A deleted message mentions nobody any more: not counted, not in anyone's feed.
        tx.execute_t(
            "DELETE FROM messaging.mentions WHERE conversation_id = $1 AND seq = $2",
            &[&message.conversation_id, &message.seq],
        )
        .await?;
        tx.execute_t(
            "DELETE FROM messaging.notifications WHERE message_id = $1",
            &[&message.id],
        )
        .await?;
        tx.commit().await?;
        if let Some(tombstone) = load_message(&conn, message.id).await? {
            publish_message(&state, MessageEvent::Deleted, &tombstone);
        }
    }
    Ok(consistency::written(&state, &conn, StatusCode::NO_CONTENT)
        .await?
        .finish())
}

/// `GET /api/conversations/{id}/messages` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a smaller `seq`.
    #[param(minimum = 0)]
    pub before: Option<i64>,
    /// Only messages with a larger `seq`; the page is then oldest first.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A page of history.
// Its messages' text is borrowed from the rows they were read from (`'r`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryPage<'r> {
    pub messages: Vec<MessageOf<'r>>,
    /// More messages exist beyond this page in the direction read.
    pub has_more: bool,
}

/// `GET /api/conversations/{id}/messages?before=&after=&limit=`: a page of the history the
/// caller can see (for a former participant, up to their departure), thread replies left out
/// (a root says how many it has). Fetching moves the caller's delivered marker. Without `after`, newest
/// first (below `before` if given); with `after`, oldest first. Served by the replica
/// (read-your-writes). 404 if the caller never was a participant; 400 for a bad limit or a
/// negative cursor.
#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "messages",
    params(("id" = Uuid, Path, description = "conversation id"), HistoryQuery),
    responses((status = 200, description = "A page of the history the caller can see.", body = HistoryPage)))]
pub async fn history(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
    query: Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let limit = page_limit(query.limit)?;
    if query.before.is_some_and(|b| b < 0) || query.after.is_some_and(|a| a < 0) {
        return Err(ApiError::BadRequest(
            "before and after must be zero or more".into(),
        ));
    }
    let ascending = query.after.is_some();
    let (before, after, user) = (query.before, query.after, caller.user_id);
    // One statement: the caller's visible range and the page within it (a member with an
    // empty page gets one row of NULLs; a non-member no row at all). The page's bounds are
    // ranges on `seq` even when absent (`coalesce` to -1 and i64::MAX, bounds no `seq`
    // reaches: it is at least 1), never `$2 IS NULL OR …`:
    // then the plan PostgreSQL makes once for any parameters (its generic plan) scans the
    // index between the bounds and costs the same as one made for these values, so it keeps
    // it instead of planning this statement at every request (docs §20.7.4 and PREPARE's
    // notes). With `$2 IS NULL OR …` PostgreSQL planned this statement at every request:
    // 0.2 ms of planning for 0.13 ms of execution (EXPLAIN ANALYZE, the 6th execution); with
    // the ranges, 0.01 ms. pgbench, this statement alone, 32 clients: 2907–3889 pages/s before,
    // 8856 after, the raw select of 50 rows 8190.
    let rows = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                Ok(conn
                    .query_t(
                        history_page_sql(ascending),
                        &[&conversation_id, &before, &after, &(limit + 1), &user],
                    )
                    .await?)
            })
        })
        .await?;
    let Some(first) = rows.first() else {
        return Err(conversation_not_found());
    };
    // The caller's delivered marker if they are a current participant, NULL for a former
    // one: one column, not two, on every row (see `message_columns` on what each value a
    // row carries costs the server).
    let delivered: Option<i64> = first.get("my_delivered_seq");
    let current = delivered.is_some();
    let delivered = delivered.unwrap_or(0);
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, Option<Uuid>>("id").is_some())
        .collect();
    let has_more = rows.len() as i64 > limit;
    let columns = MessageColumnIndex::in_conversation(first.columns(), conversation_id);
    let mut messages: Vec<MessageOf<'_>> = rows
        .into_iter()
        .map(|row| MessageOf::borrowed_from_row_at(row, &columns))
        .map(|m| if current { m } else { m.seen_as_former() })
        .collect();
    // The page's order is set here, not by an outer `ORDER BY`: the join has one outer row
    // and the lateral scan already walks the index in order, but an outer `ORDER BY` made
    // PostgreSQL sort the page again (a Sort node copying every row: about a fifth of the
    // statement's execution time, EXPLAIN ANALYZE). On rows already in order the stable sort
    // is one pass.
    if ascending {
        messages.sort_by_key(|m| m.seq);
    } else {
        messages.sort_by_key(|m| std::cmp::Reverse(m.seq));
    }
    messages.truncate(limit as usize);
    // Fetching is delivery: the delivered marker follows the newest message of the page.
    let newest = messages.iter().map(|m| m.seq).max().unwrap_or(0);
    if current && newest > delivered {
        fetched(&state, conversation_id, caller.user_id, newest).await;
    }
    // The body written into one buffer, not one grown by doubling: a plain message's JSON
    // is 358 bytes besides its text (one-digit `seq` and `rev`; tests/api/messaging.rs
    // shows one), 400 leaves room for longer numbers and escapes. A quote, a file or
    // reactions may still grow it once.
    let capacity = messages
        .iter()
        .map(|m| 400 + m.content.as_deref().map_or(0, str::len))
        .sum::<usize>()
        + 32;
    json_body(
        StatusCode::OK,
        &HistoryPage { messages, has_more },
        capacity,
    )
    .map_err(|e| ApiError::Internal(e.into()))
}

/// The history page statement ([`history`]): `$1` conversation, `$2` before, `$3` after,
/// `$4` page size + 1, `$5` reader; one row per message of the page (none: the reader is
/// not a participant), oldest first when `ascending`. Made once per order, not per request.
///
/// Its plan reads the conversation's `(conversation_id, seq)` index in page order and stops
/// after the page: planned for a tenth of a conversation's rows, that scan is the cheaper
/// plan for every estimate of the conversation's size (a cost choice, not a hint).
///
/// Why the page size is hidden: the reader's visible range (`seq` between their
/// `visible_from_seq` and `visible_to_seq`, values of the outer row) is a pair of range
/// conditions the planner cannot see the values of, so it takes them to keep 0.5 %
/// of the conversation (`DEFAULT_RANGE_INEQ_SEL`, PostgreSQL's `selfuncs.h`): 38 of 7970
/// messages. A custom plan (the first five executions of a prepared statement on each
/// connection, PostgreSQL docs, PREPARE, "Notes"), knowing the page size, 51, then expects
/// the whole conversation to fit in one page and reads all of it through a bitmap scan to
/// sort it: 7970 rows from 6812 heap pages, 10 ms warm, 87 ms cold, where the index read
/// takes 0.07 ms (EXPLAIN ANALYZE, benchmark data, 2026-12-05). Reads that fell back to the
/// primary, on connections that had not run the statement before, took 200–385 ms each,
/// fifteen at once (the history benchmark's first second; its slowest page 627 ms). The
/// page size is therefore an InitPlan (`LIMIT (SELECT $4::int8)`): no plan knows it, and
/// both plans take it for a tenth of the rows, as the generic plan always did.
pub fn history_page_sql(ascending: bool) -> &'static str {
    fn make(order: &str) -> String {
        format!(
            "SELECT {columns}, {mine},
                    CASE WHEN s.visible_to_seq IS NULL
                         THEN s.last_delivered_seq END AS my_delivered_seq
             FROM messaging.participants s
             LEFT JOIN LATERAL (
                 SELECT * FROM messaging.messages p
                 WHERE p.conversation_id = s.conversation_id AND p.thread_root_id IS NULL
                   AND p.seq < coalesce($2::bigint, 9223372036854775807)
                   AND p.seq > coalesce($3::bigint, -1)
                   AND p.seq >= s.visible_from_seq
                   AND p.seq <= coalesce(s.visible_to_seq, 9223372036854775807)
                 ORDER BY p.seq {order}
                 LIMIT (SELECT $4::int8)
             ) m ON true
             WHERE s.conversation_id = $1 AND s.user_id = $5",
            columns = page_columns_seen_from("s.visible_from_seq"),
            mine = my_reactions_column("$5"),
        )
    }
    static ASCENDING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| make("ASC"));
    static DESCENDING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| make("DESC"));
    if ascending {
        ASCENDING.as_str()
    } else {
        DESCENDING.as_str()
    }
}

/// Moves the reader's delivered marker after a fetch, on the primary; a failure (the primary
/// down, reads still served) is logged, never the read's.
async fn fetched(state: &State, conversation_id: Uuid, user: Uuid, seq: i64) {
    let moved = match state.db.primary().await {
        Ok(conn) => mark_delivered(state, &conn, conversation_id, user, seq).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = moved {
        tracing::info!(error = %e, "delivered marker not moved after a fetch");
    }
}

/// `POST /api/messages/{id}/read`: moves the read marker up to this message. 404 if the
/// message does not exist or the caller cannot see it.
#[utoipa::path(post, path = "/api/messages/{id}/read", tag = "messages", operation_id = "read_message", params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "The caller's read marker.", body = super::conversations::ReadMarker)))]
pub async fn read(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    let (message, _) = visible_message(&conn, id.into_inner(), caller.user_id).await?;
    let marker = mark_read(
        &state,
        &conn,
        message.conversation_id,
        caller.user_id,
        message.seq,
    )
    .await?;
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(marker))
}
