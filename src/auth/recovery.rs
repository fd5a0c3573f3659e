//! Proving an address and recovering an account (issue 18): email verification at sign-up
//! and for a new address, and password reset. Every mail goes through the outbox in the
//! transaction of the change ([`crate::platform::mail`]); the links are single-use and
//! expiring ([`email_tokens`]). Answers never say whether an address is registered.

use actix_web::{
    web::{self, Json},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    audit::{self, Kind},
    caller::AuthCaller,
    email_tokens::{self, Purpose},
    mails, mfa, password,
    session::{self, EndReason, Which},
    user::{User, USER_COLUMNS},
    validate::Email,
    State,
};
use crate::platform::{
    db::{unique_violation, Traced},
    error::{field, ApiError, FieldErrors},
    mail::Mail,
};

/// The same 400 for every link that cannot be used (unknown, used, expired, another
/// purpose, a deleted account): the answer never says which.
fn bad_link() -> ApiError {
    ApiError::BadRequest("this link is invalid, was already used, or has expired".into())
}

/// Body of `POST /auth/email/verify` and the token half of a password reset.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LinkToken {
    /// The token from the mailed link (after `#verify-email=` or `#reset-password=`).
    #[schema(max_length = 128)]
    pub token: String,
}

/// An answer that says only that the request was taken.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub detail: String,
}

/// Writes the verification mail for `email` (the current address, or a new one when
/// `change`), with a new link, in `tx`.
///
/// Errors: the writes fail.
pub async fn send_verification(
    tx: &impl Traced,
    state: &State,
    user_id: Uuid,
    name: &str,
    email: &str,
    change: bool,
) -> Result<(), ApiError> {
    let ttl = state.cfg.email_verify_ttl;
    let token = email_tokens::issue(tx, user_id, Purpose::VerifyEmail, email, ttl).await?;
    let link = format!("{}/#verify-email={token}", state.cfg.mail.public_url);
    enqueue(
        tx,
        state,
        mails::verify_email(email, name, &link, ttl, change),
    )
    .await
}

async fn enqueue(tx: &impl Traced, state: &State, mail: Mail) -> Result<(), ApiError> {
    state.outbox.enqueue(tx, mail).await?;
    Ok(())
}

/// `POST /auth/email/verify` `{token}`: spends a verification link. 200 with the account,
/// its address verified; for a link sent to a new address, that address replaces the old
/// one, which is told by mail. 400 (the same for every reason) for a link that cannot be
/// used; 409 if another account took the new address meanwhile. No sign-in needed: the link
/// may be opened on another device.
#[utoipa::path(post, path = "/auth/email/verify", tag = "account", request_body = LinkToken, security(()),
    responses((status = 200, description = "Verified; for a new address, now the account's.", body = User)))]
pub async fn verify_email(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<LinkToken>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let (user_id, email) = email_tokens::consume(&tx, &body.token, Purpose::VerifyEmail)
        .await?
        .ok_or_else(bad_link)?;
    let before = tx
        .query_one_t(
            "SELECT email, display_name FROM auth.users WHERE id = $1",
            &[&user_id],
        )
        .await?;
    let (old_email, name): (String, String) = (before.get(0), before.get(1));
    let row = tx
        .query_one_t(
            &format!(
                "UPDATE auth.users SET email = $2, email_verified_at = now(), updated_at = now()
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            ),
            &[&user_id, &email],
        )
        .await
        .map_err(|e| match unique_violation(&e) {
            Some("users_email_key") => {
                ApiError::Conflict("another account uses this address now".into())
            }
            _ => e.into(),
        })?;
    email_tokens::void_others(&tx, user_id, Purpose::VerifyEmail).await?;
    let changed = !old_email.eq_ignore_ascii_case(&email);
    if changed {
        enqueue(&tx, &state, mails::email_changed(&old_email, &name, &email)).await?;
    }
    let kind = if changed {
        Kind::EmailChanged
    } else {
        Kind::EmailVerified
    };
    audit::record(
        &tx,
        kind,
        Some(user_id),
        None,
        &audit::Client::of(&req),
        Some(&email),
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify();
    tracing::info!(user.id = %user_id, changed, "email verified");
    Ok(HttpResponse::Ok().json(User::from_row(&row)))
}

/// Whether `user_id` may get another link of `purpose`: fewer than `ACCOUNT_MAIL_PER_HOUR`
/// in the last hour. Called in the transaction that then issues the link, it locks the
/// account's row first, so concurrent requests take turns and cannot all pass the count.
async fn within_budget(
    db: &impl Traced,
    state: &State,
    user_id: Uuid,
    purpose: Purpose,
) -> Result<bool, ApiError> {
    db.query_opt_t(
        "SELECT 1 FROM auth.users WHERE id = $1 FOR UPDATE",
        &[&user_id],
    )
    .await?;
    let sent = email_tokens::issued_last_hour(db, user_id, purpose).await?;
    Ok(sent < state.cfg.account_mail_per_hour)
}

/// `POST /auth/email/verification` body when not signed in.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResendVerification {
    #[schema(max_length = 254)]
    pub email: String,
}

/// `POST /auth/email/verification`: mails a new verification link. Signed in (bearer): to
/// the caller's address — 202; 409 when it is verified already; 429 with `Retry-After` past
/// `ACCOUNT_MAIL_PER_HOUR`. Not signed in (when `REQUIRE_VERIFIED_EMAIL` keeps an account
/// out), with `{email}`: 202 alike whether or not an unverified account has the address,
/// which gets the link within the same budget; 422 for a malformed address.
#[utoipa::path(post, path = "/auth/email/verification", tag = "account",
    request_body(content = ResendVerification, description = "Only when not signed in."),
    security((), ("bearer" = [])),
    responses((status = 202, description = "A new link is on its way (signed in), or the same answer for any address.", body = Accepted)))]
pub async fn resend_verification(
    state: web::Data<State>,
    caller: Option<AuthCaller>,
    body: Option<Json<ResendVerification>>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    let Some(caller) = caller else {
        let mut errors = FieldErrors::new();
        let email = body
            .map(|b| b.into_inner().email)
            .and_then(|e| field(&mut errors, "email", Email::parse(&e)));
        if email.is_none() && errors.is_empty() {
            return Err(ApiError::unauthorized(
                "sign in, or give the address as {\"email\"}",
            ));
        }
        ApiError::check(errors)?;
        let email = email.map(|e| e.as_str().to_owned()).unwrap_or_default();
        in_background(
            "verification",
            resend_by_address(State::clone(&state), email),
        );
        return Ok(HttpResponse::Accepted().json(Accepted {
            detail: "if an unverified account uses this address, a new link is on its way".into(),
        }));
    };
    let row = db
        .query_one_t(
            "SELECT email, display_name, email_verified_at IS NOT NULL FROM auth.users WHERE id = $1",
            &[&caller.user_id],
        )
        .await?;
    let (email, name, verified): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    if verified {
        return Err(ApiError::Conflict("the address is verified already".into()));
    }
    let tx = db.transaction().await?;
    if !within_budget(&tx, &state, caller.user_id, Purpose::VerifyEmail).await? {
        return Err(ApiError::TooManyRequests {
            detail: "too many verification mails this hour".into(),
            retry_after: 3600,
        });
    }
    send_verification(&tx, &state, caller.user_id, &name, &email, false).await?;
    tx.commit().await?;
    state.outbox.notify();
    Ok(HttpResponse::Accepted().json(Accepted {
        detail: "a new verification link is on its way".into(),
    }))
}

/// Runs `work` after the answer went out: the answer then takes the same time whether or
/// not an account has the address (the work differs: a lookup, or a lookup, inserts and a
/// commit). Failures are logged; the caller already got its 202. The work is a span of the
/// request's trace (`auth.account_mail`), so its queries are traced with the request.
pub fn in_background(
    what: &'static str,
    work: impl std::future::Future<Output = Result<(), ApiError>> + 'static,
) {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "auth.account_mail",
        otel.kind = "internal",
        switchboard.work = what
    );
    actix_web::rt::spawn(
        async move {
            if let Err(e) = work.await {
                tracing::warn!(error = %e, what, "account mail not written");
            }
        }
        .instrument(span),
    );
}

/// Mails a reset link to the account that has `email`, if one does and its hourly budget
/// allows.
async fn send_reset(state: State, email: String, client: audit::Client) -> Result<(), ApiError> {
    let mut db = state.db.get().await?;
    let Some(row) = db
        .query_opt_t(
            "SELECT id, email, display_name FROM auth.users
             WHERE lower(email) = lower($1) AND deleted_at IS NULL",
            &[&email],
        )
        .await?
    else {
        return Ok(());
    };
    let (user_id, to, name): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
    let tx = db.transaction().await?;
    if !within_budget(&tx, &state, user_id, Purpose::PasswordReset).await? {
        tracing::warn!(user.id = %user_id, "password reset refused: mail budget spent");
        return Ok(());
    }
    let ttl = state.cfg.password_reset_ttl;
    let token = email_tokens::issue(&tx, user_id, Purpose::PasswordReset, &to, ttl).await?;
    let link = format!("{}/#reset-password={token}", state.cfg.mail.public_url);
    enqueue(&tx, &state, mails::password_reset(&to, &name, &link, ttl)).await?;
    audit::record(
        &tx,
        Kind::PasswordResetRequested,
        Some(user_id),
        None,
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify();
    tracing::info!(user.id = %user_id, "password reset link sent");
    Ok(())
}

/// Mails a new verification link to the unverified account that has `email`, if one does
/// and its hourly budget allows.
async fn resend_by_address(state: State, email: String) -> Result<(), ApiError> {
    let mut db = state.db.get().await?;
    let Some(row) = db
        .query_opt_t(
            "SELECT id, email, display_name FROM auth.users
             WHERE lower(email) = lower($1) AND deleted_at IS NULL AND email_verified_at IS NULL",
            &[&email],
        )
        .await?
    else {
        return Ok(());
    };
    let (user_id, to, name): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
    let tx = db.transaction().await?;
    if within_budget(&tx, &state, user_id, Purpose::VerifyEmail).await? {
        send_verification(&tx, &state, user_id, &name, &to, false).await?;
        tx.commit().await?;
        state.outbox.notify();
    }
    Ok(())
}

/// Records an email change and, unless another account has the address or the account's
/// hourly budget is spent, mails the new address a confirmation link.
pub async fn request_email_change(
    state: State,
    caller: (Uuid, Uuid),
    name: String,
    email: String,
    client: audit::Client,
) -> Result<(), ApiError> {
    let (user_id, session_id) = caller;
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let taken = tx
        .query_opt_t(
            "SELECT 1 FROM auth.users WHERE lower(email) = lower($1) AND id <> $2",
            &[&email, &user_id],
        )
        .await?
        .is_some();
    if !taken && within_budget(&tx, &state, user_id, Purpose::VerifyEmail).await? {
        send_verification(&tx, &state, user_id, &name, &email, true).await?;
    }
    audit::record(
        &tx,
        Kind::EmailChangeRequested,
        Some(user_id),
        Some(session_id),
        &client,
        Some(&email),
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify();
    Ok(())
}

/// `POST /auth/password/forgot` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ForgotPassword {
    #[schema(max_length = 254)]
    pub email: String,
}

/// `POST /auth/password/forgot` `{email}`: 202, the same answer whether or not an account
/// has the address. When one does (and has not had `ACCOUNT_MAIL_PER_HOUR` links this hour),
/// a reset link valid for `PASSWORD_RESET_TTL_SECS` (30 minutes) is mailed to it. NGINX
/// limits the endpoint per client address as well. 422 for a malformed address.
#[utoipa::path(post, path = "/auth/password/forgot", tag = "auth", request_body = ForgotPassword, security(()),
    responses((status = 202, description = "The same answer for known and unknown addresses.", body = Accepted)))]
pub async fn forgot_password(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<ForgotPassword>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let email = field(&mut errors, "email", Email::parse(&body.email));
    ApiError::check(errors)?;
    let email = email.map(|e| e.as_str().to_owned()).unwrap_or_default();
    let client = audit::Client::of(&req);
    in_background(
        "password reset",
        send_reset(State::clone(&state), email, client),
    );
    Ok(HttpResponse::Accepted().json(Accepted {
        detail: "if an account uses this address, a link to reset its password is on its way"
            .into(),
    }))
}

/// `POST /auth/password/reset` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResetPassword {
    #[schema(max_length = 128)]
    pub token: String,
    /// 8–128 characters, as at sign-up.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

/// `POST /auth/password/reset` `{token, new_password}`: spends a reset link and sets the
/// password. 204; every session of the account ends (their sockets close, their refresh
/// tokens stop working), other reset links die, the address counts as verified (the link
/// reached it), and a notice is mailed. 400 (the same for every reason) for a link that
/// cannot be used; 422 for a password that does not qualify (the link stays usable).
#[utoipa::path(post, path = "/auth/password/reset", tag = "auth", request_body = ResetPassword, security(()),
    responses((status = 204, description = "The password is set; every session ended.")))]
pub async fn reset_password(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<ResetPassword>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    password::validate("new_password", &body.new_password, &mut errors);
    ApiError::check(errors)?;
    let hash = password::hash(body.new_password, state.cfg.bcrypt_cost).await?;
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let (user_id, sent_to) = email_tokens::consume(&tx, &body.token, Purpose::PasswordReset)
        .await?
        .ok_or_else(bad_link)?;
    let row = tx
        .query_one_t(
            "UPDATE auth.users SET password_hash = $2, updated_at = now(),
                 email_verified_at = CASE WHEN lower(email) = lower($3)
                                          THEN coalesce(email_verified_at, now())
                                          ELSE email_verified_at END
             WHERE id = $1 RETURNING email, display_name",
            &[&user_id, &hash, &sent_to],
        )
        .await?;
    let (email, name): (String, String) = (row.get(0), row.get(1));
    email_tokens::void_all(&tx, user_id).await?;
    mfa::void_challenges(&tx, user_id).await?;
    let ended = session::end(&tx, user_id, Which::All, EndReason::Password).await?;
    enqueue(&tx, &state, mails::password_changed(&email, &name)).await?;
    let detail = format!("{} sessions ended", ended.len());
    audit::record(
        &tx,
        Kind::PasswordReset,
        Some(user_id),
        None,
        &audit::Client::of(&req),
        Some(&detail),
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify();
    tracing::info!(user.id = %user_id, ended = ended.len(), "password reset");
    Ok(HttpResponse::NoContent().finish())
}
