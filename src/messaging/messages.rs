//! Messages: send (primary, gapless per-conversation `seq`), history pages (replica), and the
//! read marker by message id.

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path, Query},
    HttpResponse,
};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    caller::Caller,
    consistency::{self, Consistency},
    conversations::{mark_read, not_found, page_limit, publish_frame},
    model::{self, Message, ServerFrame, MESSAGE_COLUMNS},
    State,
};
use crate::{
    db,
    error::{unique_violation, ApiError, FieldErrors},
    realtime::bus::{BusEvent, MAX_PAYLOAD},
};

/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// `POST /api/conversations/{id}/messages` body.
#[derive(Deserialize)]
pub struct SendMessage {
    pub content: String,
    pub reply_to: Option<Uuid>,
    /// Client-chosen idempotency key: a retry with the same one returns the same message.
    pub client_id: Option<String>,
}

/// Content rules: not blank, at most `max_chars` Unicode scalar values, no NUL (JSON
/// strings are already valid UTF-8 once parsed).
pub fn validate_content(content: &str, max_chars: usize, errors: &mut FieldErrors) {
    let mut add = |m: String| errors.entry("content".into()).or_default().push(m);
    if content.trim().is_empty() {
        add("must not be empty".into());
    }
    if content.chars().count() > max_chars {
        add(format!("must be at most {max_chars} characters"));
    }
    if content.contains('\0') {
        add("must not contain NUL characters".into());
    }
}

/// `POST /api/conversations/{id}/messages`: 201 with the message, committed on the primary;
/// 200 with the original when `client_id` repeats an earlier send. 404 if the caller is not a
/// participant; 422 for invalid content or a `reply_to` outside the conversation.
pub async fn send(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<SendMessage>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    validate_content(&body.content, state.cfg.message_max_chars, &mut errors);
    if let Some(c) = &body.client_id {
        let n = c.chars().count();
        if n == 0 || n > MAX_CLIENT_ID_CHARS || c.chars().any(char::is_control) {
            errors
                .entry("client_id".into())
                .or_default()
                .push("must be 1 to 64 printable characters".into());
        }
    }
    ApiError::check(errors)?;

    let mut conn = state.db.primary().await?;
    if let Some(existing) =
        by_client_id(&conn, conversation_id, caller.user_id, &body.client_id).await?
    {
        return answer(&state, &conn, existing, StatusCode::OK).await;
    }
    let tx = conn.transaction().await?;
    if !model::is_participant(&tx, conversation_id, caller.user_id).await? {
        return Err(not_found());
    }
    if let Some(parent) = body.reply_to {
        let same = tx
            .query_opt(
                "SELECT 1 FROM messaging.messages WHERE id = $1 AND conversation_id = $2",
                &[&parent, &conversation_id],
            )
            .await?;
        if same.is_none() {
            return Err(ApiError::invalid_field(
                "reply_to",
                "no such message in this conversation",
            ));
        }
    }
    // The row lock on the conversation serialises senders, so seq has no gaps and no
    // duplicates; a failed transaction rolls the increment back with the message.
    let seq: i64 = tx
        .query_one(
            "UPDATE messaging.conversations SET last_seq = last_seq + 1, last_activity_at = now()
             WHERE id = $1 RETURNING last_seq",
            &[&conversation_id],
        )
        .await?
        .get(0);
    let inserted = tx
        .query_one(
            &format!(
                "INSERT INTO messaging.messages AS m
                     (id, conversation_id, seq, sender_id, kind, content, reply_to, client_id)
                 VALUES ($1, $2, $3, $4, 'text', $5, $6, $7)
                 RETURNING {MESSAGE_COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &conversation_id,
                &seq,
                &caller.user_id,
                &body.content,
                &body.reply_to,
                &body.client_id,
            ],
        )
        .await;
    let message = match inserted {
        Ok(row) => Message::from_row(&row),
        Err(e) if unique_violation(&e) == Some("messages_client_id_key") => {
            // A concurrent retry with the same client_id won the race.
            drop(tx);
            let existing = by_client_id(&conn, conversation_id, caller.user_id, &body.client_id)
                .await?
                .ok_or_else(|| {
                    ApiError::Conflict("client_id is being used by another send".into())
                })?;
            return answer(&state, &conn, existing, StatusCode::OK).await;
        }
        Err(e) => return Err(e.into()),
    };
    // The sender has read their own message.
    tx.execute(
        "UPDATE messaging.participants SET last_read_seq = GREATEST(last_read_seq, $3)
         WHERE conversation_id = $1 AND user_id = $2",
        &[&conversation_id, &caller.user_id, &seq],
    )
    .await?;
    tx.commit().await?;
    publish_message(&state, "message.created", &message);
    answer(&state, &conn, message, StatusCode::CREATED).await
}

async fn by_client_id(
    conn: &deadpool_postgres::Object,
    conversation_id: Uuid,
    sender: Uuid,
    client_id: &Option<String>,
) -> Result<Option<Message>, ApiError> {
    let Some(client_id) = client_id else {
        return Ok(None);
    };
    let row = conn
        .query_opt(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messaging.messages m
                 WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_id = $3"
            ),
            &[&conversation_id, &sender, client_id],
        )
        .await?;
    Ok(row.as_ref().map(Message::from_row))
}

async fn answer(
    state: &State,
    conn: &deadpool_postgres::Object,
    message: Message,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let lsn = db::current_lsn(conn).await?;
    let mut res = HttpResponse::build(status);
    consistency::attach(&mut res, lsn, state.cfg.cookie_secure);
    Ok(res.json(message))
}

/// Queues a `message.*` event for the conversation's sockets; a frame too large for NOTIFY
/// goes by reference and receivers load it.
pub fn publish_message(state: &State, kind: &str, message: &Message) {
    let frame = ServerFrame {
        kind,
        conversation_id: Some(message.conversation_id),
        seq: Some(message.seq),
        data: message,
    }
    .to_json();
    if frame.len() + 200 > MAX_PAYLOAD {
        state.publisher.publish(BusEvent::MessageRef {
            conversation_id: message.conversation_id,
            message_id: message.id,
            event: kind.to_owned(),
        });
    } else {
        publish_frame(state, message.conversation_id, None, frame);
    }
}

/// `GET /api/conversations/{id}/messages` query.
#[derive(Deserialize)]
pub struct HistoryQuery {
    /// Only messages with a smaller `seq`.
    pub before: Option<i64>,
    /// Only messages with a larger `seq`; the page is then oldest first.
    pub after: Option<i64>,
    /// Page size, 1–100, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize)]
struct HistoryPage {
    messages: Vec<Message>,
    /// More messages exist beyond this page in the direction read.
    has_more: bool,
}

/// `GET /api/conversations/{id}/messages?before=&after=&limit=`: a page of history by `seq`.
/// Without `after`, newest first (below `before` if given); with `after`, oldest first.
/// Served by the replica (read-your-writes). 404 if the caller is not a participant; 400 for
/// a bad limit or a negative cursor.
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
    let (conn, _) = state.db.read(consistency.0).await?;
    if !model::is_participant(&conn, conversation_id, caller.user_id).await? {
        return Err(not_found());
    }
    let ascending = query.after.is_some();
    let order = if ascending { "ASC" } else { "DESC" };
    let rows = conn
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messaging.messages m
                 WHERE m.conversation_id = $1
                   AND ($2::bigint IS NULL OR m.seq < $2)
                   AND ($3::bigint IS NULL OR m.seq > $3)
                 ORDER BY m.seq {order}
                 LIMIT $4"
            ),
            &[&conversation_id, &query.before, &query.after, &(limit + 1)],
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    let messages = rows
        .iter()
        .take(limit as usize)
        .map(Message::from_row)
        .collect();
    Ok(HttpResponse::Ok().json(HistoryPage { messages, has_more }))
}

/// `POST /api/messages/{id}/read`: moves the read marker up to this message. 404 if the
/// message does not exist or the caller is not in its conversation.
pub async fn read(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    let row = conn
        .query_opt(
            "SELECT conversation_id, seq FROM messaging.messages WHERE id = $1",
            &[&id.into_inner()],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("message not found".into()))?;
    let conversation_id: Uuid = row.get(0);
    let seq: i64 = row.get(1);
    let marker = mark_read(&state, &conn, conversation_id, caller.user_id, seq)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::NotFound("message not found".into()),
            other => other,
        })?;
    let lsn = db::current_lsn(&conn).await?;
    let mut res = HttpResponse::Ok();
    consistency::attach(&mut res, lsn, state.cfg.cookie_secure);
    Ok(res.json(marker))
}
