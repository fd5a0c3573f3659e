//! Conversations: create (direct or group), list with unread counts, details, read marker.

use crate::platform::db::{Conn, Traced};
use std::collections::BTreeSet;

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path, Query},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    blocks,
    caller::Caller,
    consistency::{self, Consistency},
    domain::{GroupName, Role},
    mentions,
    model::{self, message_columns_seen_from, ConversationSummary, Message, Peer, MESSAGE_FROM},
    protocol::{Event, ParticipantsAdded, ReadMoved, ServerFrame},
    publish::{publish_frame, publish_to_users},
    visibility::current_scope,
    State,
};
use crate::platform::error::{field, ApiError, FieldErrors};

/// Most participants in one conversation.
pub const MAX_PARTICIPANTS: usize = 256;

/// `POST /api/conversations` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateConversation {
    /// The other participants (the caller is added anyway), at most 256.
    #[schema(min_items = 1, max_items = 256)]
    pub participant_ids: Vec<Uuid>,
    /// A group's name, 1–100 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Default: a group when there is a name or more than one other participant.
    pub is_group: Option<bool>,
}

/// `POST /api/conversations`: 201 with the new conversation; for a direct conversation that
/// already exists, 200 with it (one per pair, even under concurrent creation: the pair's
/// `direct_key` is unique). 422 for unknown users or invalid fields.
#[utoipa::path(post, path = "/api/conversations", tag = "conversations", request_body = CreateConversation,
    responses((status = 201, description = "Created, with its participants.", body = model::Conversation),
        (status = 200, description = "The direct conversation with these two people already exists: here it is.", body = model::Conversation)))]
pub async fn create(
    state: web::Data<State>,
    caller: Caller,
    body: Json<CreateConversation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let others: BTreeSet<Uuid> = body
        .participant_ids
        .iter()
        .copied()
        .filter(|u| *u != caller.user_id)
        .collect();
    let is_group = body
        .is_group
        .unwrap_or(body.name.is_some() || others.len() != 1);

    let mut errors = FieldErrors::new();
    let mut add = |f: &str, m: &str| errors.entry(f.into()).or_default().push(m.into());
    if others.is_empty() {
        add("participant_ids", "must name at least one other user");
    }
    if others.len() + 1 > MAX_PARTICIPANTS {
        add(
            "participant_ids",
            "too many participants (at most 256 with the caller)",
        );
    }
    if !is_group && others.len() > 1 {
        add(
            "participant_ids",
            "a direct conversation has exactly one other participant",
        );
    }
    if !is_group && body.name.is_some() {
        add("name", "only a group conversation has a name");
    }
    let name = body
        .name
        .as_deref()
        .and_then(|n| field(&mut errors, "name", GroupName::parse(n)));
    ApiError::check(errors)?;
    let name: Option<String> = name.map(|n| n.as_str().to_owned());

    let mut conn = state.db.primary().await?;
    let others: Vec<Uuid> = others.into_iter().collect();
    let found = conn
        .query_t(
            "SELECT id FROM auth.public_profiles WHERE id = ANY($1) AND active",
            &[&others],
        )
        .await?;
    if found.len() != others.len() {
        let found: BTreeSet<Uuid> = found.iter().map(|r| r.get(0)).collect();
        let missing: Vec<String> = others
            .iter()
            .filter(|u| !found.contains(u))
            .map(Uuid::to_string)
            .collect();
        return Err(ApiError::invalid_field(
            "participant_ids",
            format!("no such user: {}", missing.join(", ")),
        ));
    }

    let tx = conn.transaction().await?;
    let id = Uuid::now_v7();
    if is_group {
        blocks::lock_pairs(&tx, caller.user_id, &others).await?;
        let refusing = blocks::blocking(&tx, caller.user_id, &others).await?;
        if !refusing.is_empty() {
            return Err(blocks::cannot_add(&refusing));
        }
    }
    let (id, created) = if is_group {
        tx.execute_t(
            "INSERT INTO messaging.conversations (id, is_group, name, created_by)
             VALUES ($1, true, $2, $3)",
            &[&id, &name, &caller.user_id],
        )
        .await?;
        (id, true)
    } else {
        let key = blocks::direct_key(caller.user_id, others[0]);
        // An existing direct conversation is returned (read-only if blocked); a new one is
        // refused while either blocks the other.
        blocks::lock_pair(&tx, caller.user_id, others[0]).await?;
        let blocked = blocks::between(&tx, caller.user_id, others[0]).await?;
        let inserted = tx
            .query_opt_t(
                "INSERT INTO messaging.conversations (id, is_group, direct_key, created_by)
                 VALUES ($1, false, $2, $3)
                 ON CONFLICT (direct_key) DO NOTHING RETURNING id",
                &[&id, &key, &caller.user_id],
            )
            .await?;
        match inserted {
            Some(_) if blocked => {
                return Err(ApiError::Forbidden(
                    "you cannot start a conversation with this user".into(),
                ))
            }
            Some(_) => (id, true),
            None => {
                let row = tx
                    .query_one_t(
                        "SELECT id FROM messaging.conversations WHERE direct_key = $1",
                        &[&key],
                    )
                    .await?;
                (row.get(0), false)
            }
        }
    };
    if created {
        let caller_role = if is_group { Role::Admin } else { Role::Member }.as_str();
        tx.execute_t(
            "INSERT INTO messaging.participants (conversation_id, user_id, role)
             VALUES ($1, $2, $3)",
            &[&id, &caller.user_id, &caller_role],
        )
        .await?;
        tx.execute_t(
            "INSERT INTO messaging.participants (conversation_id, user_id, role)
             SELECT $1, u, 'member' FROM unnest($2::uuid[]) AS u",
            &[&id, &others],
        )
        .await?;
    }
    tx.commit().await?;
    let vanished = || ApiError::Internal(anyhow::anyhow!("conversation vanished after commit"));
    if created {
        // The frame without presence (every participant gets the same), the answer with it.
        let conversation = model::load_conversation(&conn, id)
            .await?
            .ok_or_else(vanished)?;
        let frame = ServerFrame::of(
            id,
            Event::ParticipantAdded(ParticipantsAdded {
                user_ids: conversation
                    .participants
                    .iter()
                    .map(|p| p.user_id)
                    .collect(),
                conversation: Some(conversation.clone()),
            }),
        );
        publish_frame(&state, id, None, frame.to_json());
    }
    let conversation = model::load_conversation_for(&conn, id, caller.user_id)
        .await?
        .ok_or_else(vanished)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(consistency::written(&state, &conn, status)
        .await?
        .json(conversation))
}

/// `GET /api/conversations` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1–100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// `GET /api/conversations` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// 9999-12-31T23:59:59.999999Z in microseconds since the Unix epoch.
const MAX_CURSOR_MICROS: i64 = 253_402_300_799_999_999;

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id)
}

fn decode_cursor(s: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    // Activity times lie between the Unix epoch and year 10000; anything else was never
    // issued, and PostgreSQL's timestamptz would refuse part of it (SQLSTATE 22008).
    if !(0..=MAX_CURSOR_MICROS).contains(&micros) {
        return Err(bad());
    }
    let at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// Checks a page size: 1..=100, default 50.
///
/// Errors: 400 outside the range.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    crate::platform::http::page_size(limit, 50, 100)
}

/// A conversation's place in the caller's list: its last activity, or for a former
/// participant the moment they left (nothing after it shows, not even its timing).
const ACTIVITY: &str = "CASE WHEN p.left_at IS NULL THEN c.last_activity_at ELSE p.left_at END";

/// `GET /api/conversations?cursor=&limit=`: the caller's conversations (current and former)
/// by last activity, newest first, each with its last visible message and `unread_count`;
/// keyset-paged. Served by the replica (read-your-writes).
#[utoipa::path(get, path = "/api/conversations", tag = "conversations", params(ListQuery),
    responses((status = 200, description = "The caller's conversations, by last activity, newest first.", body = ConversationPage)))]
pub async fn list(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    query: Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let (after_at, after_id) = match cursor {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let user = caller.user_id;
    let rows = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                Ok(conn
                    .query_t(
                        &format!(
                            "SELECT c.id AS conv_id, c.is_group,
                        CASE WHEN p.left_at IS NULL THEN c.name ELSE p.left_name END AS name,
                        coalesce(p.visible_to_seq, c.last_seq) AS visible_last_seq,
                        {ACTIVITY} AS activity_at,
                        p.last_read_seq, p.unread_from_seq, c.blocked AS conv_blocked,
                        CASE WHEN p.left_at IS NULL THEN c.avatar_id END AS conv_avatar_id,
                        {UNREAD_THREAD_REPLIES} AS unread_thread_replies,
                        {thread_unread} AS thread_unread_count,
                        p.left_at IS NOT NULL AS has_left,
                        {mention_count} AS mention_count, p.notify_level,
                        CASE WHEN p.muted_until > now() THEN p.muted_until END AS muted_until,
                        peer.id AS peer_id, peer.username AS peer_username,
                        peer.display_name AS peer_display_name, lm.*
                 FROM messaging.participants p
                 JOIN messaging.conversations c ON c.id = p.conversation_id
                 LEFT JOIN LATERAL (
                     SELECT u.id, u.username, u.display_name
                     FROM messaging.participants o
                     JOIN auth.public_profiles u ON u.id = o.user_id
                     WHERE NOT c.is_group AND o.conversation_id = c.id AND o.user_id <> $1
                     LIMIT 1
                 ) peer ON true
                 LEFT JOIN LATERAL (
                     SELECT {columns} FROM {MESSAGE_FROM}
                     WHERE m.conversation_id = c.id
                       AND m.seq = coalesce(p.visible_to_seq, c.last_seq)
                       AND m.seq >= p.visible_from_seq
                 ) lm ON true
                 WHERE p.user_id = $1
                   AND (p.hidden_at IS NULL OR {ACTIVITY} > p.hidden_at)
                   AND ($2::timestamptz IS NULL OR ({ACTIVITY}, c.id) < ($2, $3))
                 ORDER BY {ACTIVITY} DESC, c.id DESC
                 LIMIT $4",
                            columns = message_columns_seen_from("p.visible_from_seq"),
                            mention_count = mentions::unread_count_sql("$1"),
                            thread_unread = super::threads::UNREAD_IN_FOLLOWED,
                        ),
                        &[&user, &after_at, &after_id, &(limit + 1)],
                    )
                    .await?)
            })
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let conversations: Vec<ConversationSummary> = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            let last_seq: i64 = r.get("visible_last_seq");
            let last_read_seq: i64 = r.get("last_read_seq");
            let unread_from_seq: Option<i64> = r.get("unread_from_seq");
            let has_message: Option<Uuid> = r.get("id");
            let peer_id: Option<Uuid> = r.get("peer_id");
            ConversationSummary {
                id: r.get("conv_id"),
                is_group: r.get("is_group"),
                name: r.get("name"),
                last_seq,
                last_activity_at: r.get("activity_at"),
                last_read_seq,
                unread_from_seq,
                unread_count: unread_count(
                    last_seq,
                    last_read_seq,
                    unread_from_seq,
                    r.get("unread_thread_replies"),
                ),
                thread_unread_count: r.get("thread_unread_count"),
                mention_count: r.get("mention_count"),
                notify_level: r
                    .get::<_, Option<&str>>("notify_level")
                    .map(super::notifications::preferences::Level::from_column),
                muted_until: r.get("muted_until"),
                left: r.get("has_left"),
                blocked: r.get("conv_blocked"),
                avatar_id: r.get("conv_avatar_id"),
                peer: peer_id.map(|user_id| Peer {
                    user_id,
                    username: r.get("peer_username"),
                    display_name: r.get("peer_display_name"),
                }),
                last_message: has_message.map(|_| {
                    let m = Message::from_row(r);
                    if r.get("has_left") {
                        m.seen_as_former()
                    } else {
                        m
                    }
                }),
            }
        })
        .collect();
    let next_cursor = if more {
        conversations
            .last()
            .map(|c| encode_cursor(c.last_activity_at, c.id))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ConversationPage {
        conversations,
        next_cursor,
    }))
}

/// `GET /api/conversations/{id}`: details with the current participants. A former
/// participant gets the conversation as it was when they left: its name, roster and read
/// markers then, `last_seq` of their departure, no presence ([`model::load_as_left`]). 404
/// for a conversation the caller never was in (indistinguishable from one that does not
/// exist).
#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations", params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 200, description = "The conversation with its current participants.", body = model::Conversation)))]
pub async fn get(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), caller.user_id);
    let conversation = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let scope = super::visibility::any_scope(conn, id, user).await?;
                if scope.current() {
                    model::load_conversation_for(conn, id, user)
                        .await?
                        .ok_or_else(not_found)
                } else {
                    model::load_as_left(conn, id, user)
                        .await?
                        .ok_or_else(not_found)
                }
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(conversation))
}

use super::visibility::conversation_not_found as not_found;

/// `POST /api/conversations/{id}/read` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ReadRequest {
    /// Everything up to this `seq` has been read.
    #[schema(minimum = 0)]
    pub seq: i64,
}

/// Answer of the read endpoints (and `conversation.unread`'s data).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadMarker {
    pub conversation_id: Uuid,
    pub last_read_seq: i64,
    /// Marked unread from this `seq` on (`POST …/unread`) until read up to it again.
    pub unread_from_seq: Option<i64>,
    pub unread_count: i64,
}

/// Messages counted unread: after the read marker, or from where the participant marked the
/// conversation unread, whichever is earlier — less the `thread_replies` among them (a
/// thread's replies are counted by its own read marker: [`super::threads`]).
pub fn unread_count(
    last_seq: i64,
    last_read_seq: i64,
    unread_from_seq: Option<i64>,
    thread_replies: i64,
) -> i64 {
    let read_to = unread_from_seq.map_or(last_read_seq, |u| last_read_seq.min(u - 1));
    (last_seq - read_to - thread_replies).max(0)
}

/// SQL: how many thread replies of participant `p`'s conversation (`c`) lie in their unread
/// range (see [`unread_count`]); the statement names the participant row `p` and the
/// conversation `c`.
const UNREAD_THREAD_REPLIES: &str = "(SELECT count(*) FROM messaging.messages t
     WHERE t.conversation_id = p.conversation_id AND t.thread_root_id IS NOT NULL
       AND t.seq > LEAST(p.last_read_seq, coalesce(p.unread_from_seq - 1, p.last_read_seq))
       AND t.seq <= coalesce(p.visible_to_seq, c.last_seq))";

/// Moves the caller's read marker forward to `seq` — never back, never past the last message
/// they can see (a former participant: their departure) — and announces a `read` event to
/// the conversation when a current participant's marker moved.
///
/// Errors: 404 if the caller is not a participant.
pub async fn mark_read(
    state: &State,
    conn: &Conn,
    conversation_id: Uuid,
    user_id: Uuid,
    seq: i64,
) -> Result<ReadMarker, ApiError> {
    let row = conn
        .query_opt_t(
            &format!(
                "WITH old AS (
                 SELECT last_read_seq FROM messaging.participants
                 WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE
             ), moved AS (
                 UPDATE messaging.participants p
                 SET last_read_seq = GREATEST(p.last_read_seq,
                                              LEAST($3, coalesce(p.visible_to_seq, c.last_seq))),
                     -- Reading implies delivery.
                     last_delivered_seq = GREATEST(p.last_delivered_seq, p.last_read_seq,
                                              LEAST($3, coalesce(p.visible_to_seq, c.last_seq))),
                     -- Reading up to where it was marked unread clears the mark.
                     unread_from_seq = CASE WHEN p.unread_from_seq <= $3 THEN NULL
                                            ELSE p.unread_from_seq END
                 FROM messaging.conversations c, old
                 WHERE c.id = p.conversation_id AND p.conversation_id = $1 AND p.user_id = $2
                 RETURNING p.last_read_seq, p.unread_from_seq,
                           coalesce(p.visible_to_seq, c.last_seq) AS last_seq,
                           {UNREAD_THREAD_REPLIES} AS thread_replies,
                           old.last_read_seq AS previous, p.left_at IS NULL AS current
             ), timed AS (
                 -- When it was read, for receipts with times (messaging::delivered).
                 INSERT INTO messaging.receipt_marks (conversation_id, user_id, kind, seq)
                 SELECT $1, $2, 'read', moved.last_read_seq FROM moved
                 WHERE moved.last_read_seq > moved.previous AND moved.current
                 ON CONFLICT DO NOTHING
             )
             SELECT * FROM moved"
            ),
            &[&conversation_id, &user_id, &seq],
        )
        .await?
        .ok_or_else(not_found)?;
    let last_read_seq: i64 = row.get("last_read_seq");
    let last_seq: i64 = row.get("last_seq");
    let previous: i64 = row.get("previous");
    if last_read_seq > previous && row.get::<_, bool>("current") {
        let frame = ServerFrame::of(
            conversation_id,
            Event::Read(ReadMoved {
                user_id,
                last_read_seq,
            }),
        )
        .at(Some(last_read_seq));
        publish_frame(state, conversation_id, None, frame.to_json());
    }
    let unread_from_seq: Option<i64> = row.get("unread_from_seq");
    Ok(ReadMarker {
        conversation_id,
        last_read_seq,
        unread_from_seq,
        unread_count: unread_count(
            last_seq,
            last_read_seq,
            unread_from_seq,
            row.get("thread_replies"),
        ),
    })
}

/// `POST /api/conversations/{id}/read` `{seq}`: 200 with the read marker and unread count.
/// 422 for a negative `seq`; 404 for a conversation the caller is not in.
#[utoipa::path(post, path = "/api/conversations/{id}/read", tag = "messages", operation_id = "read_conversation", params(("id" = Uuid, Path, description = "conversation id")),
    request_body = ReadRequest,
    responses((status = 200, description = "The caller's read marker (moved forward only).", body = ReadMarker)))]
pub async fn read(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<ReadRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.seq < 0 {
        return Err(ApiError::invalid_field("seq", "must be zero or more"));
    }
    let conn = state.db.primary().await?;
    let marker = mark_read(&state, &conn, id.into_inner(), caller.user_id, body.seq).await?;
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(marker))
}

/// `POST /api/conversations/{id}/hide`: takes the conversation out of the caller's list
/// until its next activity (a message, a membership change, a rename); nothing else changes
/// and nobody else is told. 204. 404 for a conversation the caller never was in.
#[utoipa::path(post, path = "/api/conversations/{id}/hide", tag = "conversations", params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 204, description = "Hidden until its next activity.")))]
pub async fn hide(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    let hidden = conn
        .execute_t(
            "UPDATE messaging.participants SET hidden_at = now()
             WHERE conversation_id = $1 AND user_id = $2",
            &[&id.into_inner(), &caller.user_id],
        )
        .await?;
    if hidden == 0 {
        return Err(not_found());
    }
    Ok(consistency::written(&state, &conn, StatusCode::NO_CONTENT)
        .await?
        .finish())
}

/// `POST /api/conversations/{id}/unread` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct UnreadRequest {
    /// The first message to count as unread again.
    #[schema(minimum = 1)]
    pub seq: i64,
}

/// `POST /api/conversations/{id}/unread` `{seq}`: counts the conversation unread from `seq`
/// for the caller, without moving the read marker back (others keep seeing it as read);
/// reading up to `seq` again clears it. The caller's other sockets get
/// `conversation.unread`. 200 with the marker. 404 for a conversation the caller is not in;
/// 422 for a `seq` outside what they can see.
#[utoipa::path(post, path = "/api/conversations/{id}/unread", tag = "messages", params(("id" = Uuid, Path, description = "conversation id")),
    request_body = UnreadRequest,
    responses((status = 200, description = "The caller's read marker and unread mark.", body = ReadMarker)))]
pub async fn mark_unread(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<UnreadRequest>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let conn = state.db.primary().await?;
    let row = conn
        .query_opt_t(
            &format!(
                "UPDATE messaging.participants p SET unread_from_seq = $3
             FROM messaging.conversations c
             WHERE c.id = p.conversation_id AND p.conversation_id = $1 AND p.user_id = $2
               AND p.left_at IS NULL
               AND $3 >= GREATEST(p.visible_from_seq, 1) AND $3 <= c.last_seq
             RETURNING p.last_read_seq, c.last_seq, {UNREAD_THREAD_REPLIES}"
            ),
            &[&conversation_id, &caller.user_id, &body.seq],
        )
        .await?;
    let Some(row) = row else {
        current_scope(&conn, conversation_id, caller.user_id).await?;
        return Err(ApiError::invalid_field(
            "seq",
            "must be a message of this conversation that you can see",
        ));
    };
    let last_read_seq: i64 = row.get(0);
    let marker = ReadMarker {
        conversation_id,
        last_read_seq,
        unread_from_seq: Some(body.seq),
        unread_count: unread_count(row.get(1), last_read_seq, Some(body.seq), row.get(2)),
    };
    let frame = ServerFrame::of(conversation_id, Event::ConversationUnread(marker.clone()));
    publish_to_users(&state, vec![caller.user_id], frame.to_json());
    Ok(consistency::written(&state, &conn, StatusCode::OK)
        .await?
        .json(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456);
        let at = at.unwrap_or_default();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).ok(), Some((at, id)));
        assert!(decode_cursor("nonsense").is_err());
        assert!(decode_cursor("12_notauuid").is_err());
        let id = Uuid::nil();
        assert!(decode_cursor(&format!("-300000000000000000_{id}")).is_err());
        assert!(decode_cursor(&format!("{}_{id}", i64::MAX)).is_err());
    }

    #[test]
    fn page_limit_bounds() {
        assert_eq!(page_limit(None).ok(), Some(50));
        assert_eq!(page_limit(Some(100)).ok(), Some(100));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(101)).is_err());
    }
}
