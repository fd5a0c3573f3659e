//! Blocking (issue 20). A user who blocks another no longer hears from them: the blocked
//! user cannot open a direct conversation with the blocker or add them to a group, and gets
//! neither their presence nor their typing; a direct conversation between the two turns
//! read-only both ways (`conversations.blocked`, migrations/messaging V9) until no block is
//! left between them. Blocks are listed and undone by the blocker.
//!
//! Races: a block and the creation of the pair's direct conversation take the same
//! transaction-level advisory lock (the pair's `direct_key`), so the conversation's flag is
//! always set from every block committed before it; sends, edits, reactions and pins take the
//! conversation's row lock, which the flag's update takes too.

use actix_web::{
    http::StatusCode,
    web::{self, Path},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{
    caller::Caller,
    consistency,
    model::load_conversation,
    protocol::{ConversationChanged, Event, ServerFrame},
    publish::publish_frame,
    State,
};
use crate::platform::{
    db::{Conn, Traced},
    error::ApiError,
};

/// Most users one account may block.
pub const MAX_BLOCKS: i64 = 1000;

/// The `direct_key` of the pair: `"<smaller id>:<larger id>"` (migrations/messaging V1).
pub fn direct_key(a: Uuid, b: Uuid) -> String {
    format!("{}:{}", a.min(b), a.max(b))
}

/// Serializes changes to the pair's blocks with the creation of their direct conversation
/// (until the transaction ends).
///
/// Errors: the query fails.
pub async fn lock_pair(tx: &impl Traced, a: Uuid, b: Uuid) -> Result<(), ApiError> {
    tx.execute_t(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 20))",
        &[&direct_key(a, b)],
    )
    .await?;
    Ok(())
}

/// [`lock_pair`] for `actor` with each of `others`, in one order (the pairs' keys sorted), so
/// two transactions locking overlapping pairs never deadlock. A group add or creation takes
/// them before checking [`blocking`]: a block committed meanwhile is seen.
///
/// Errors: the query fails.
pub async fn lock_pairs(tx: &impl Traced, actor: Uuid, others: &[Uuid]) -> Result<(), ApiError> {
    let mut keys: Vec<String> = others.iter().map(|o| direct_key(actor, *o)).collect();
    keys.sort();
    keys.dedup();
    tx.execute_t(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 20)) FROM unnest($1::text[]) AS k",
        &[&keys],
    )
    .await?;
    Ok(())
}

/// Whether either of the two blocks the other.
///
/// Errors: the query fails.
pub async fn between(db: &impl Traced, a: Uuid, b: Uuid) -> Result<bool, ApiError> {
    Ok(db
        .query_opt_t(
            "SELECT 1 FROM messaging.blocks
             WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $2 AND blocked_id = $1)",
            &[&a, &b],
        )
        .await?
        .is_some())
}

/// Those of `users` who block `actor` (they cannot be added to a group by them).
///
/// Errors: the query fails.
pub async fn blocking(
    db: &impl Traced,
    actor: Uuid,
    users: &[Uuid],
) -> Result<Vec<Uuid>, ApiError> {
    Ok(db
        .query_t(
            "SELECT blocker_id FROM messaging.blocks
             WHERE blocked_id = $1 AND blocker_id = ANY($2) ORDER BY blocker_id",
            &[&actor, &users],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The answer when `users` block the one adding them.
pub fn cannot_add(users: &[Uuid]) -> ApiError {
    let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
    ApiError::Forbidden(format!("you cannot add: {}", ids.join(", ")))
}

/// A user the caller blocks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Block {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `GET /api/blocks` answer, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Blocks {
    pub blocks: Vec<Block>,
}

/// `GET /api/blocks`: the users the caller blocks, newest first. Read from the primary (a
/// block list is read right after changing it).
#[utoipa::path(get, path = "/api/blocks", tag = "blocks", operation_id = "list_blocks",
    responses((status = 200, description = "The users the caller blocks.", body = Blocks)))]
pub async fn list(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let conn = state.db.primary().await?;
    Ok(HttpResponse::Ok().json(load(&conn, caller.user_id).await?))
}

async fn load(conn: &Conn, user: Uuid) -> Result<Blocks, ApiError> {
    let blocks = conn
        .query_t(
            "SELECT b.blocked_id, u.username, u.display_name, b.created_at
             FROM messaging.blocks b LEFT JOIN auth.public_profiles u ON u.id = b.blocked_id
             WHERE b.blocker_id = $1 ORDER BY b.created_at DESC, b.blocked_id",
            &[&user],
        )
        .await?
        .iter()
        .map(|r| Block {
            user_id: r.get(0),
            username: r.get(1),
            display_name: r.get(2),
            created_at: r.get(3),
        })
        .collect();
    Ok(Blocks { blocks })
}

/// `PUT /api/blocks/{user_id}`: blocks the user. Idempotent. 200 with the caller's blocks.
/// 404 for no such (active) user; 422 for blocking oneself; 409 past [`MAX_BLOCKS`].
#[utoipa::path(put, path = "/api/blocks/{user_id}", tag = "blocks",
    params(("user_id" = Uuid, Path, description = "the user to block")),
    responses((status = 200, description = "The users the caller blocks.", body = Blocks)))]
pub async fn block(
    state: web::Data<State>,
    caller: Caller,
    user_id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    change(&state, caller.user_id, user_id.into_inner(), true).await
}

/// `DELETE /api/blocks/{user_id}`: undoes a block. Idempotent. 200 with the caller's blocks.
#[utoipa::path(delete, path = "/api/blocks/{user_id}", tag = "blocks",
    params(("user_id" = Uuid, Path, description = "the user to unblock")),
    responses((status = 200, description = "The users the caller blocks.", body = Blocks)))]
pub async fn unblock(
    state: web::Data<State>,
    caller: Caller,
    user_id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    change(&state, caller.user_id, user_id.into_inner(), false).await
}

async fn change(
    state: &State,
    me: Uuid,
    other: Uuid,
    blocking: bool,
) -> Result<HttpResponse, ApiError> {
    if me == other {
        return Err(ApiError::invalid_field(
            "user_id",
            "you cannot block yourself",
        ));
    }
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    // The blocker's own changes take turns (the count below holds under concurrent blocks),
    // then the pair's (against a direct conversation or group add being made).
    tx.execute_t(
        "SELECT pg_advisory_xact_lock(hashtextextended('blocks:' || $1::uuid::text, 20))",
        &[&me],
    )
    .await?;
    lock_pair(&tx, me, other).await?;
    let changed = if blocking {
        let exists = tx
            .query_opt_t(
                "SELECT 1 FROM auth.public_profiles WHERE id = $1 AND active",
                &[&other],
            )
            .await?;
        if exists.is_none() {
            return Err(ApiError::NotFound("user not found".into()));
        }
        tx.execute_t(
            "INSERT INTO messaging.blocks (blocker_id, blocked_id)
             SELECT $1, $2
             WHERE (SELECT count(*) FROM messaging.blocks WHERE blocker_id = $1) < $3
             ON CONFLICT DO NOTHING",
            &[&me, &other, &MAX_BLOCKS],
        )
        .await?
    } else {
        tx.execute_t(
            "DELETE FROM messaging.blocks WHERE blocker_id = $1 AND blocked_id = $2",
            &[&me, &other],
        )
        .await?
    };
    if changed == 0 {
        let held = tx
            .query_opt_t(
                "SELECT 1 FROM messaging.blocks WHERE blocker_id = $1 AND blocked_id = $2",
                &[&me, &other],
            )
            .await?
            .is_some();
        drop(tx);
        if blocking && !held {
            return Err(ApiError::Conflict(format!(
                "you can block at most {MAX_BLOCKS} users"
            )));
        }
        return Ok(HttpResponse::Ok().json(load(&conn, me).await?));
    }
    // Their direct conversation follows: read-only while any block between them is left.
    let conversation: Option<Uuid> = tx
        .query_opt_t(
            "UPDATE messaging.conversations c SET blocked = EXISTS (
                 SELECT 1 FROM messaging.blocks
                 WHERE (blocker_id = $2 AND blocked_id = $3) OR (blocker_id = $3 AND blocked_id = $2))
             WHERE c.direct_key = $1
             RETURNING CASE WHEN c.blocked IS DISTINCT FROM (
                 SELECT o.blocked FROM messaging.conversations o WHERE o.id = c.id) THEN c.id END",
            &[&direct_key(me, other), &me, &other],
        )
        .await?
        .and_then(|r| r.get(0));
    tx.commit().await?;
    if let Some(id) = conversation {
        // Both participants learn that it turned read-only (or writable again).
        let conversation = load_conversation(&conn, id).await?;
        let frame = ServerFrame::of(
            id,
            Event::ConversationUpdated(ConversationChanged { conversation }),
        );
        publish_frame(state, id, None, frame.to_json());
    }
    Ok(consistency::written(state, &conn, StatusCode::OK)
        .await?
        .json(load(&conn, me).await?))
}
