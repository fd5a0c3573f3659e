//! Group management (DESIGN.md §3): add and remove participants, promote and demote, rename,
//! leave. Every change is a `system` message in history, so it has a `seq` like everything
//! else, and is announced live. Admin-only actions answer 403 to members; all answer 404 to
//! non-participants and 422 on a direct conversation.

use crate::platform::db::Traced;
use std::collections::{BTreeSet, HashMap};

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpResponse,
};
use deadpool_postgres::{GenericClient, Transaction};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    append::{append, NewMessage},
    caller::Caller,
    consistency,
    conversations::{MAX_NAME_CHARS, MAX_PARTICIPANTS},
    domain::{MessageKind, Role, SystemAction, SystemRecord},
    events::BusEvent,
    model::{self, load_conversation, Message, Scope},
    protocol::{ConversationChanged, Event, MessageEvent, ParticipantsAdded, ServerFrame, UserIds},
    publish::{message_frame, publish_frame, publish_message, publish_to_users},
    State,
};
use crate::platform::error::{ApiError, FieldErrors};

/// Locks the conversation row (serialising membership changes, so two admins cannot demote
/// each other into a group with none) and returns the caller's scope as of now.
async fn lock(
    tx: &Transaction<'_>,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Scope, ApiError> {
    tx.execute_t(
        "SELECT 1 FROM messaging.conversations WHERE id = $1 FOR UPDATE",
        &[&conversation_id],
    )
    .await?;
    let scope = model::current_scope(tx, conversation_id, user_id).await?;
    if !scope.is_group {
        return Err(ApiError::invalid_field(
            "conversation",
            "a direct conversation has exactly two participants and no name or roles",
        ));
    }
    Ok(scope)
}

fn require_admin(scope: &Scope) -> Result<(), ApiError> {
    if scope.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only a group admin can do that".into()))
    }
}

async fn usernames(
    db: &impl GenericClient,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, ApiError> {
    let rows = db
        .query_t(
            "SELECT id, username FROM auth.public_profiles WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn name_of(names: &HashMap<Uuid, String>, id: Uuid) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| "someone".to_owned())
}

/// Appends a system message recording `record` (its `actor_id`, `None` for the service
/// itself, is the message's sender).
async fn system(
    tx: &Transaction<'_>,
    conversation_id: Uuid,
    text: &str,
    record: SystemRecord,
) -> Result<Message, ApiError> {
    append(
        tx,
        conversation_id,
        NewMessage {
            kind: MessageKind::System,
            sender_id: record.actor_id,
            content: Some(text),
            meta: Some(record.to_meta()),
            ..NewMessage::default()
        },
    )
    .await
}

/// After commit: announce the system messages and an extra event to the conversation, and
/// to `also` (users whose membership just ended, no longer reached through it) the first
/// message only — their departure, the last thing they may see — and the extra event. Their
/// sockets are told the membership ended, so they drop its typing state at once.
fn announce(
    state: &State,
    conversation_id: Uuid,
    messages: &[Message],
    event: Event,
    also: Vec<Uuid>,
) {
    if !also.is_empty() {
        state.publisher.publish(BusEvent::MembershipEnded {
            conversation_id,
            user_ids: also.clone(),
        });
    }
    let frame = |last: Option<&Message>| {
        ServerFrame::of(conversation_id, event.clone())
            .at(last.map(|m| m.seq))
            .to_json()
    };
    for m in messages {
        publish_message(state, MessageEvent::Created, m);
    }
    publish_frame(state, conversation_id, None, frame(messages.last()));
    if let (false, Some(departure)) = (also.is_empty(), messages.first()) {
        publish_to_users(
            state,
            also.clone(),
            message_frame(MessageEvent::Created, departure),
        );
        publish_to_users(state, also, frame(Some(departure)));
    }
}

/// After a committed rename or role change: announces the system message and
/// `conversation.updated`, and answers with the conversation.
async fn updated(
    state: &State,
    conn: &deadpool_postgres::Object,
    message: Message,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = message.conversation_id;
    let conversation = load_conversation(conn, conversation_id).await?;
    announce(
        state,
        conversation_id,
        &[message],
        Event::ConversationUpdated(ConversationChanged { conversation }),
        Vec::new(),
    );
    respond(state, conn, conversation_id).await
}

/// The conversation's details as the answer to a change, with the consistency token.
async fn respond(
    state: &State,
    conn: &deadpool_postgres::Object,
    conversation_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let conversation = load_conversation(conn, conversation_id)
        .await?
        .ok_or_else(model::conversation_not_found)?;
    Ok(consistency::written(state, conn, StatusCode::OK)
        .await?
        .json(conversation))
}

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
        return respond(&state, &conn, conversation_id).await;
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
    respond(&state, &conn, conversation_id).await
}

/// Ends `user_id`'s membership at `seq` (they keep history up to and including it), keeping
/// what they saw then — the group's name and the others' roles, joining times and read
/// markers — as the conversation a former participant is shown ([`model::load_as_left`]).
async fn end_membership(
    tx: &Transaction<'_>,
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
                            'last_read_seq', o.last_read_seq)
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
    if !model::is_participant(&tx, conversation_id, target).await? {
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

/// `PATCH …/participants/{user_id}` body: `role` is `admin` or `member`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetRole {
    /// `admin` or `member`.
    #[schema(example = "admin", pattern = "^(admin|member)$")]
    pub role: String,
}

/// `PATCH …/participants/{user_id}` `{role}` (admin): promotes or demotes. 200 with the
/// conversation. 404 if that user is not a participant; 422 for an unknown role or for
/// demoting the last admin.
#[utoipa::path(patch, path = "/api/conversations/{id}/participants/{user_id}", tag = "groups",
    params(("id" = Uuid, Path, description = "conversation id"), ("user_id" = Uuid, Path, description = "participant")),
    request_body = SetRole,
    responses((status = 200, description = "The group with its participants.", body = crate::messaging::model::Conversation)))]
pub async fn set_role(
    state: web::Data<State>,
    caller: Caller,
    path: Path<(Uuid, Uuid)>,
    body: Json<SetRole>,
) -> Result<HttpResponse, ApiError> {
    let (conversation_id, target) = path.into_inner();
    let role = match body.role.as_str() {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => return Err(ApiError::invalid_field("role", "must be admin or member")),
    };
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let scope = lock(&tx, conversation_id, caller.user_id).await?;
    require_admin(&scope)?;
    let target_scope = match model::scope(&tx, conversation_id, target).await? {
        Some(s) if s.current() => s,
        _ => return Err(ApiError::NotFound("no such participant".into())),
    };
    if target_scope.admin == (role == Role::Admin) {
        drop(tx);
        return respond(&state, &conn, conversation_id).await;
    }
    if role == Role::Member {
        let admins: i64 = tx
            .query_one_t(
                "SELECT count(*) FROM messaging.participants
                 WHERE conversation_id = $1 AND left_at IS NULL AND role = 'admin'",
                &[&conversation_id],
            )
            .await?
            .get(0);
        if admins <= 1 {
            return Err(ApiError::invalid_field(
                "role",
                "a group needs an admin: promote someone else first",
            ));
        }
    }
    tx.execute_t(
        "UPDATE messaging.participants SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        &[&conversation_id, &target, &role.as_str()],
    )
    .await?;
    let names = usernames(&tx, &[caller.user_id, target]).await?;
    let text = format!(
        "{} made {} {}",
        name_of(&names, caller.user_id),
        name_of(&names, target),
        if role == Role::Admin {
            "an admin"
        } else {
            "a member"
        }
    );
    let message = system(
        &tx,
        conversation_id,
        &text,
        SystemRecord {
            role: Some(role),
            ..SystemRecord::of(
                SystemAction::ParticipantRole,
                Some(caller.user_id),
                vec![target],
            )
        },
    )
    .await?;
    tx.commit().await?;
    updated(&state, &conn, message).await
}

/// `PATCH /api/conversations/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Rename {
    /// 1–100 characters ([`MAX_NAME_CHARS`]).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// `PATCH /api/conversations/{id}` `{name}` (admin): renames a group. 200 with the
/// conversation; 422 for an invalid name or a direct conversation.
#[utoipa::path(patch, path = "/api/conversations/{id}", tag = "groups", params(("id" = Uuid, Path, description = "conversation id")),
    request_body = Rename,
    responses((status = 200, description = "The renamed group.", body = crate::messaging::model::Conversation)))]
pub async fn rename(
    state: web::Data<State>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<Rename>,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = id.into_inner();
    let name = body.name.trim().to_owned();
    let mut errors = FieldErrors::new();
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        errors
            .entry("name".into())
            .or_default()
            .push("must be 1 to 100 printable characters".into());
    }
    ApiError::check(errors)?;
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let scope = lock(&tx, conversation_id, caller.user_id).await?;
    require_admin(&scope)?;
    tx.execute_t(
        "UPDATE messaging.conversations SET name = $2 WHERE id = $1",
        &[&conversation_id, &name],
    )
    .await?;
    let names = usernames(&tx, &[caller.user_id]).await?;
    let text = format!(
        "{} renamed the group to {name}",
        name_of(&names, caller.user_id)
    );
    let message = system(
        &tx,
        conversation_id,
        &text,
        SystemRecord {
            user_ids: None,
            name: Some(name.clone()),
            ..SystemRecord::of(
                SystemAction::ConversationRenamed,
                Some(caller.user_id),
                Vec::new(),
            )
        },
    )
    .await?;
    tx.commit().await?;
    updated(&state, &conn, message).await
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
