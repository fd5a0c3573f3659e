//! The caller's account (profile, password, deletion) and other users' public profiles.

use crate::platform::db::{Conn, Traced};
use actix_web::{
    web::{self, Json, Path, Query},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    attempts,
    audit::{self, Kind},
    caller::AuthCaller,
    password, refresh,
    session::{self, EndReason, Which},
    user::{User, USER_COLUMNS},
    validate::{DisplayName, Email},
    State,
};
use crate::platform::error::{field, ApiError, FieldErrors};

async fn load_user(db: &Conn, id: Uuid) -> Result<User, ApiError> {
    let row = db
        .query_opt_t(
            &format!("SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1 AND deleted_at IS NULL"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".into()))?;
    Ok(User::from_row(&row))
}

/// `GET /auth/me`: 200 with the caller's account (`{id, username, email, display_name,
/// created_at}`).
#[utoipa::path(get, path = "/auth/me", tag = "account",
    responses((status = 200, description = "The caller's account.", body = crate::auth::user::User)))]
pub async fn me(state: web::Data<State>, caller: AuthCaller) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    Ok(HttpResponse::Ok().json(load_user(&db, caller.user_id).await?))
}

/// `PATCH /auth/me` body: any of the fields.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateAccount {
    /// 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: Option<String>,
    /// Up to 254 characters; unique, case-insensitive. Needs `current_password`.
    #[schema(max_length = 254)]
    pub email: Option<String>,
    /// The account's password: required with `email` (an address change leads to a password
    /// reset, so a token alone must not start one).
    #[schema(max_length = 1024)]
    pub current_password: Option<String>,
}

/// `PATCH /auth/me` answer when a new email was asked for: the same whether or not another
/// account has that address, so the endpoint tells nobody which addresses are registered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EmailChangeRequested {
    /// The address asked for.
    pub pending_email: String,
    pub detail: String,
}

/// `PATCH /auth/me`: 200 with the updated account; 422 for invalid fields, or `email`
/// without `current_password`; 403 for a wrong password (429 past the account's password
/// attempts). With a new `email`, 202 `{pending_email, detail}` instead — the same answer whether the address is
/// free or registered to another account (issue 14). A free address is sent a confirmation
/// link; the account's address changes only when it is followed (`POST /auth/email/verify`),
/// and the old address is then told (issue 18). A registered one gets nothing.
#[utoipa::path(patch, path = "/auth/me", tag = "account", request_body = UpdateAccount,
    responses((status = 200, description = "The updated account (no new email asked for).", body = crate::auth::user::User),
        (status = 202, description = "A new email was asked for: the same answer whether or not the address is free.", body = EmailChangeRequested)))]
pub async fn update(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    body: Json<UpdateAccount>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    let display_name = body
        .display_name
        .and_then(|d| field(&mut errors, "display_name", DisplayName::parse(&d)));
    let email = body
        .email
        .and_then(|e| field(&mut errors, "email", Email::parse(&e)));
    if email.is_some() && body.current_password.is_none() {
        errors.insert(
            "current_password".into(),
            vec!["required to change the email address".into()],
        );
    }
    ApiError::check(errors)?;
    let display_name = display_name.as_ref().map(DisplayName::as_str);
    let db = state.db.get().await?;
    if let (Some(_), Some(password)) = (&email, body.current_password) {
        confirm_password(&state, &db, caller.user_id, password).await?;
    }
    let row = db
        .query_one_t(
            &format!(
                "UPDATE auth.users SET display_name = coalesce($2, display_name), updated_at = now()
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            ),
            &[&caller.user_id, &display_name],
        )
        .await?;
    let user = User::from_row(&row);
    let Some(email) = email
        .map(|e| e.as_str().to_owned())
        .filter(|e| !e.eq_ignore_ascii_case(&user.email))
    else {
        return Ok(HttpResponse::Ok().json(user));
    };
    // Proof first: the new address gets a link, and becomes the account's only when it is
    // followed (`POST /auth/email/verify`, which also tells the old address). An address
    // another account has gets nothing, with the same answer.
    // In the background, after the answer: the answer then takes the same time whether the
    // address is free or taken (issue 14), and a spent mail budget looks the same too.
    super::recovery::in_background(
        "email change",
        super::recovery::request_email_change(
            State::clone(&state),
            (caller.user_id, caller.session_id),
            user.display_name.clone(),
            email.clone(),
            audit::Client::of(&req),
        ),
    );
    Ok(HttpResponse::Accepted().json(EmailChangeRequested {
        pending_email: email,
        detail: "a confirmation link is on its way to the new address; the change takes effect when it is followed".into(),
    }))
}

/// Checks the caller's current password, counted against the account's password attempts
/// like a sign-in ([`attempts`]), so a stolen access token is no password oracle.
///
/// Errors: 403 when it does not match; 429 with `Retry-After` past the attempt limit.
pub(crate) async fn confirm_password(
    state: &State,
    db: &Conn,
    user_id: Uuid,
    password: String,
) -> Result<(), ApiError> {
    let key = attempts::Key::Account(user_id);
    attempts::begin(db, state, &key).await?;
    let hash: Option<String> = db
        .query_opt_t(
            "SELECT password_hash FROM auth.users WHERE id = $1 AND deleted_at IS NULL",
            &[&user_id],
        )
        .await?
        .map(|r| r.get(0));
    if password::verify(password, hash, state.cfg.bcrypt_cost).await? {
        attempts::succeeded(db, &key).await
    } else {
        Err(ApiError::Forbidden("current password is incorrect".into()))
    }
}

/// `POST /auth/me/password` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChangePassword {
    pub current_password: String,
    /// 8 characters to 72 bytes.
    #[schema(min_length = 8)]
    pub new_password: String,
}

/// `POST /auth/me/password`: 204; every other session ends (their sockets close), the
/// current one goes on. 403 for a wrong current password; 422 for an invalid new one.
#[utoipa::path(post, path = "/auth/me/password", tag = "account", request_body = ChangePassword,
    responses((status = 204, description = "Changed; every other session ended.")))]
pub async fn change_password(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    body: Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    password::validate("new_password", &body.new_password, &mut errors);
    ApiError::check(errors)?;
    let mut db = state.db.get().await?;
    confirm_password(&state, &db, caller.user_id, body.current_password).await?;
    let hash = password::hash(body.new_password, state.cfg.bcrypt_cost).await?;
    let tx = db.transaction().await?;
    tx.execute_t(
        "UPDATE auth.users SET password_hash = $2, updated_at = now() WHERE id = $1",
        &[&caller.user_id, &hash],
    )
    .await?;
    let ended = session::end(
        &tx,
        caller.user_id,
        Which::AllBut(caller.session_id),
        EndReason::Password,
    )
    .await?;
    super::email_tokens::void_all(&tx, caller.user_id).await?;
    super::mfa::void_challenges(&tx, caller.user_id).await?;
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::PasswordChanged,
        Some(caller.user_id),
        Some(caller.session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, ended = ended.len(), "password changed");
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /auth/me` body: the password, confirming the deletion.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteAccount {
    pub password: String,
}

/// `DELETE /auth/me`: soft-deletes the account. 204; every session ends (sockets close), the
/// refresh cookie is cleared, the user can no longer sign in and leaves search; messages they
/// sent stay in history. The username and email stay reserved. 403 for a wrong password.
#[utoipa::path(delete, path = "/auth/me", tag = "account", request_body = DeleteAccount,
    responses((status = 204, description = "Deleted (soft): every session ended, the cookie cleared.")))]
pub async fn delete(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    body: Json<DeleteAccount>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    confirm_password(&state, &db, caller.user_id, body.into_inner().password).await?;
    let tx = db.transaction().await?;
    tx.execute_t(
        "UPDATE auth.users SET deleted_at = now(), updated_at = now() WHERE id = $1",
        &[&caller.user_id],
    )
    .await?;
    // Its passkeys stop signing in (a deleted account keeps its row, not its credentials).
    tx.execute_t(
        "DELETE FROM auth.passkeys WHERE user_id = $1",
        &[&caller.user_id],
    )
    .await?;
    let ended = session::end(&tx, caller.user_id, Which::All, EndReason::Deleted).await?;
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::AccountDeleted,
        Some(caller.user_id),
        Some(caller.session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, ended = ended.len(), "account deleted");
    Ok(HttpResponse::NoContent()
        .cookie(refresh::clear_cookie(state.cfg.web.cookie_secure))
        .finish())
}

/// A public profile: what any signed-in user may see of another.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PublicProfile {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// False once the account is deleted.
    pub active: bool,
}

/// `GET /auth/users` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Prefix of a username or display name, case-insensitive, 1–64 characters.
    #[param(min_length = 1, max_length = 64)]
    pub query: String,
    /// 1–50, default 20.
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
}

/// Escapes `%`, `_` and `\` for a LIKE pattern (PostgreSQL docs §9.7.1).
fn like_prefix(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// `GET /auth/users?query=&limit=`: 200 `{users: [PublicProfile]}` whose username or display
/// name starts with `query` (case-insensitive), deleted accounts excluded, by username.
/// 400 for an empty or overlong query or a limit outside 1–50.
#[utoipa::path(get, path = "/auth/users", tag = "users", params(SearchQuery),
    responses((status = 200, description = "Matching active users, by username.", body = UserList)))]
pub async fn search(
    state: web::Data<State>,
    _caller: AuthCaller,
    query: Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.query.trim().to_lowercase();
    let n = q.chars().count();
    if n == 0 || n > 64 || q.contains('\0') {
        return Err(ApiError::BadRequest(
            "query must be 1 to 64 characters, without NUL".into(),
        ));
    }
    let limit = crate::platform::http::page_size(query.limit, 20, 50)?;
    let pattern = like_prefix(&q);
    let db = state.db.get().await?;
    let rows = db
        .query_t(
            "SELECT id, username, display_name FROM auth.users
             WHERE deleted_at IS NULL
               AND (lower(username) LIKE $1 OR lower(display_name) LIKE $1)
             ORDER BY lower(username)
             LIMIT $2",
            &[&pattern, &limit],
        )
        .await?;
    let users: Vec<PublicProfile> = rows
        .iter()
        .map(|r| PublicProfile {
            id: r.get(0),
            username: r.get(1),
            display_name: r.get(2),
            active: true,
        })
        .collect();
    Ok(HttpResponse::Ok().json(UserList { users }))
}

/// `GET /auth/users` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<PublicProfile>,
}

/// `GET /auth/users/{id}`: 200 with the public profile (`active: false` for a deleted
/// account, whose messages still name it); 404 if there is no such user.
#[utoipa::path(get, path = "/auth/users/{id}", tag = "users", params(("id" = Uuid, Path, description = "user id")),
    responses((status = 200, description = "The public profile.", body = PublicProfile)))]
pub async fn profile(
    state: web::Data<State>,
    _caller: AuthCaller,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    let row = db
        .query_opt_t(
            "SELECT id, username, display_name, active FROM auth.public_profiles WHERE id = $1",
            &[&id.into_inner()],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".into()))?;
    Ok(HttpResponse::Ok().json(PublicProfile {
        id: row.get(0),
        username: row.get(1),
        display_name: row.get(2),
        active: row.get(3),
    }))
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("al"), "al%");
        assert_eq!(like_prefix("a%_\\"), "a\\%\\_\\\\%");
    }
}
