//! Who is in a group: add, remove, leave — each a system message, each membership's end
//! keeping what the leaver saw ([`end_membership`]).

use crate::platform::db::{Traced, Tx};
use std::collections::BTreeSet;

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpResponse,
};

use serde::Deserialize;
use uuid::Uuid;

use super::{announce, lock, name_of, require_admin, respond, system, usernames};
use crate::{
    messaging::{
        caller::Caller,
        consistency,
        conversations::MAX_PARTICIPANTS,
        domain::{Role, SystemAction, SystemRecord},
        model::load_conversation,
        protocol::{Event, ParticipantsAdded, UserIds},
        visibility, State,
    },
    platform::error::ApiError,
};

/// `POST /api/conversations/{id}/participants` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AddParticipants {
    #[schema(min_items = 1, max_items = 256)]
    pub user_ids: Vec<Uuid>,
}

/// `POST …/participants` `{user_ids}` (admin): adds users, who see history from their
/// addition on (a former participant starts a new visible range). 200 with the conversation;
/// users already in it are skipped. 422 for unknown users or more than 256 participants.
#[utoipa::path(post, path = "/api/conversations/{id}/participants", tag = "groups", params(("id" = Uuid, Path, description = "conversation id")),
    request_body = AddParticipants,
    responses((status = 200, description = "The group with its participants.", body = crate::messaging::model::Conversation)))]
pub async fn add(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<AddParticipants>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let wanted: BTreeSet<Uuid> = body.user_ids.iter().copied().collect();
    if wanted.is_empty() || wanted.len() > MAX_PARTICIPANTS {
        return Err(ApiError::invalid_field(
            "user_ids",
            "must name 1 to 256 users",
        ));
    }
    let wanted: Vec<Uuid> = wanted.into_iter().collect();
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let scope = lock(&tx, conversation_id, caller.user_id).await?;
    require_admin(&scope)?;
    let active: BTreeSet<Uuid> = tx
        .query_t(
            "SELECT id FROM auth.public_profiles WHERE id = ANY($1) AND active",
            &[&wanted],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|u| !active.contains(u))
        .map(Uuid::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("no such user: {}", missing.join(", ")),
        ));
    }
    let current: BTreeSet<Uuid> = tx
        .query_t(
            "SELECT user_id FROM messaging.participants
             WHERE conversation_id = $1 AND left_at IS NULL",
            &[&conversation_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let new: Vec<Uuid> = wanted
        .into_iter()
        .filter(|u| !current.contains(u))
        .collect();
    if new.is_empty() {
        drop(tx);
        return respond(&state, &conn, conversation_id, caller.user_id).await;
    }
    crate::messaging::blocks::lock_pairs(&tx, caller.user_id, &new).await?;
    let refusing = crate::messaging::blocks::blocking(&tx, caller.user_id, &new).await?;
    if !refusing.is_empty() {
        return Err(crate::messaging::blocks::cannot_add(&refusing));
    }
    if current.len() + new.len() > MAX_PARTICIPANTS {
        return Err(ApiError::invalid_field(
            "user_ids",
            "a conversation has at most 256 participants",
        ));
    }
    let mut ids = new.clone();
    ids.push(caller.user_id);
    let names = usernames(&tx, &ids).await?;
    let added: Vec<String> = new.iter().map(|u| name_of(&names, *u)).collect();
    let text = format!(
        "{} added {}",
        name_of(&names, caller.user_id),
        added.join(", ")
    );
    let message = system(
        &tx,
        conversation_id,
        &text,
        SystemRecord::of(
            SystemAction::ParticipantAdded,
            Some(caller.user_id),
            new.clone(),
        ),
    )
    .await?;
    // New members see history from their addition on and have read up to it.
    tx.execute_t(
        "INSERT INTO messaging.participants
             (conversation_id, user_id, role, last_read_seq, visible_from_seq)
         SELECT $1, u, 'member', $3, $3 FROM unnest($2::uuid[]) AS u
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET
             role = 'member', joined_at = now(), last_read_seq = $3,
             visible_from_seq = $3, visible_to_seq = NULL, left_at = NULL,
             left_name = NULL, left_roster = NULL",
        &[&conversation_id, &new, &message.seq],
    )
    .await?;
    tx.commit().await?;
    let conversation = load_conversation(&conn, conversation_id).await?;
    announce(
        &state,
        conversation_id,
        &[message],
        Event::ParticipantAdded(ParticipantsAdded {
            user_ids: new,
            conversation,
        }),
        Vec::new(),
    );
    respond(&state, &conn, conversation_id, caller.user_id).await
}

/// Ends `user_id`'s membership at `seq` (they keep history up to and including it), keeping
/// what they saw then — the group's name and the others' roles, joining times and read
/// markers — as the conversation a former participant is shown ([`model::load_as_left`]).
async fn end_membership(
    tx: &Tx<'_>,
    conversation_id: Uuid,
    user_id: Uuid,
    seq: i64,
) -> Result<(), ApiError> {
    tx.execute_t(
        "UPDATE messaging.participants
         SET left_at = now(), visible_to_seq = $3, role = 'member',
             left_name = (SELECT name FROM messaging.conversations WHERE id = $1),
             left_roster = (
                 SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'user_id', o.user_id, 'role', o.role, 'joined_at', o.joined_at,
                            'last_read_seq', o.last_read_seq,
                            'last_delivered_seq', o.last_delivered_seq)
                            ORDER BY o.joined_at, o.user_id), '[]'::jsonb)
                 FROM messaging.participants o
                 WHERE o.conversation_id = $1 AND o.left_at IS NULL AND o.user_id <> $2)
         WHERE conversation_id = $1 AND user_id = $2",
        &[&conversation_id, &user_id, &seq],
    )
    .await?;
    Ok(())
}

/// `DELETE …/participants/{user_id}` (admin): removes a participant, who keeps history up
/// to the removal and sees nothing after. 204. 404 if that user is not a participant; 422
/// for oneself (use `…/leave`).
#[utoipa::path(delete, path = "/api/conversations/{id}/participants/{user_id}", tag = "groups",
    params(("id" = Uuid, Path, description = "conversation id"), ("user_id" = Uuid, Path, description = "participant to remove")),
    responses((status = 204, description = "Removed.")))]
pub async fn remove(
    state: web::Data<State>,
    caller: Caller,
    path: Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (conversation_id, target) = path.into_inner();
    if target == caller.user_id {
        return Err(ApiError::invalid_field(
            "user_id",
            "to leave a group, POST /api/conversations/{id}/leave",
        ));
    }
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let scope = lock(&tx, conversation_id, caller.user_id).await?;
    require_admin(&scope)?;
    if !visibility::is_participant(&tx, conversation_id, target).await? {
        return Err(ApiError::NotFound("no such participant".into()));
    }
    let names = usernames(&tx, &[caller.user_id, target]).await?;
    let text = format!(
        "{} removed {}",
        name_of(&names, caller.user_id),
        name_of(&names, target)
    );
    let message = system(
        &tx,
        conversation_id,
        &text,
        SystemRecord::of(
            SystemAction::ParticipantRemoved,
            Some(caller.user_id),
            vec![target],
        ),
    )
    .await?;
    end_membership(&tx, conversation_id, target, message.seq).await?;
    tx.commit().await?;
    announce(
        &state,
        conversation_id,
        &[message],
        Event::ParticipantRemoved(UserIds {
            user_ids: vec![target],
        }),
        vec![target],
    );
    Ok(consistency::written(&state, &conn, StatusCode::NO_CONTENT)
        .await?
        .finish())
}

/// `POST /api/conversations/{id}/leave`: the caller leaves a group, keeping history up to
/// their departure. If they were its last admin, the longest-standing member becomes admin
/// (a second system message says so). 204; 422 for a direct conversation.
#[utoipa::path(post, path = "/api/conversations/{id}/leave", tag = "groups", params(("id" = Uuid, Path, description = "conversation id")),
    responses((status = 204, description = "Left the group.")))]
pub async fn leave(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let scope = lock(&tx, conversation_id, caller.user_id).await?;
    let names = usernames(&tx, &[caller.user_id]).await?;
    let mut messages = vec![
        system(
            &tx,
            conversation_id,
            &format!("{} left", name_of(&names, caller.user_id)),
            SystemRecord::of(
                SystemAction::ParticipantLeft,
                Some(caller.user_id),
                vec![caller.user_id],
            ),
        )
        .await?,
    ];
    end_membership(&tx, conversation_id, caller.user_id, messages[0].seq).await?;
    if scope.admin {
        let successor = tx
            .query_opt_t(
                "SELECT user_id FROM messaging.participants p
                 WHERE conversation_id = $1 AND left_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM messaging.participants a
                                   WHERE a.conversation_id = $1 AND a.left_at IS NULL
                                     AND a.role = 'admin')
                 ORDER BY joined_at, user_id LIMIT 1",
                &[&conversation_id],
            )
            .await?;
        if let Some(row) = successor {
            let heir: Uuid = row.get(0);
            tx.execute_t(
                "UPDATE messaging.participants SET role = 'admin'
                 WHERE conversation_id = $1 AND user_id = $2",
                &[&conversation_id, &heir],
            )
            .await?;
            let names = usernames(&tx, &[heir]).await?;
            messages.push(
                system(
                    &tx,
                    conversation_id,
                    &format!("{} is now an admin", name_of(&names, heir)),
                    SystemRecord {
                        role: Some(Role::Admin),
                        ..SystemRecord::of(SystemAction::ParticipantRole, None, vec![heir])
                    },
                )
                .await?,
            );
        }
    }
    tx.commit().await?;
    announce(
        &state,
        conversation_id,
        &messages,
        Event::ParticipantRemoved(UserIds {
            user_ids: vec![caller.user_id],
        }),
        vec![caller.user_id],
    );
    Ok(consistency::written(&state, &conn, StatusCode::NO_CONTENT)
        .await?
        .finish())
}
