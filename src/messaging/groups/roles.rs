//! What a group is called and who runs it: rename and promote/demote — admin actions, each a
//! system message announced with `conversation.updated`.

use crate::platform::db::Traced;

use actix_web::{
    web::{self, Json, Path},
    HttpResponse,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{lock, name_of, require_admin, respond, system, updated, usernames};
use crate::{
    messaging::{
        caller::Caller,
        domain::{GroupName, Role, SystemAction, SystemRecord},
        visibility, State,
    },
    platform::error::ApiError,
};

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
    let target_scope = match visibility::scope(&tx, conversation_id, target).await? {
        Some(s) if s.current() => s,
        _ => return Err(ApiError::NotFound("no such participant".into())),
    };
    if target_scope.admin == (role == Role::Admin) {
        drop(tx);
        return respond(&state, &conn, conversation_id, caller.user_id).await;
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
    updated(&state, &conn, message, caller.user_id).await
}

/// `PATCH /api/conversations/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Rename {
    /// 1–100 characters after trimming, no control characters.
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
    let name = GroupName::parse(&body.name)
        .map_err(|m| ApiError::invalid("name", m))?
        .as_str()
        .to_owned();
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
    updated(&state, &conn, message, caller.user_id).await
}
