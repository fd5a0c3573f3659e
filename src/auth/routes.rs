//! Handlers of the auth service's sign-in flow (`/auth/*`, DESIGN.md §2–3) and the route
//! table of the whole service.

use crate::platform::db::Traced;
use actix_web::{
    cookie::Cookie,
    http::{header, StatusCode},
    web::{self, Json},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    account, attempts,
    audit::{self, Kind},
    mfa, passkeys, password, recovery, refresh,
    session::{self, EndReason, Which},
    sessions, totp,
    user::{User, USER_COLUMNS},
    validate::{DisplayName, Email, Username},
    State,
};
use crate::platform::{
    db::unique_violation,
    error::{field, ApiError, FieldErrors},
};

/// Registers the auth routes under `/auth`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        // Resources (not bare routes) so a known path with the wrong method answers 405.
        web::scope("/auth")
            .service(web::resource("/register").post(register))
            .service(web::resource("/login").post(login))
            .service(web::resource("/login/mfa").post(mfa::answer))
            .service(web::resource("/login/passkey/options").post(passkeys::sign_in_options))
            .service(web::resource("/login/passkey").post(passkeys::sign_in))
            .service(web::resource("/refresh").post(refresh_session))
            .service(web::resource("/logout").post(logout))
            .service(
                web::resource("/sessions")
                    .get(sessions::list)
                    .delete(sessions::revoke_others),
            )
            .service(web::resource("/sessions/{id}").delete(sessions::revoke))
            .service(
                web::resource("/me")
                    .get(account::me)
                    .patch(account::update)
                    .delete(account::delete),
            )
            .service(web::resource("/me/password").post(account::change_password))
            .service(
                web::resource("/me/totp")
                    .get(totp::status)
                    .post(totp::start)
                    .delete(totp::disable),
            )
            .service(web::resource("/me/totp/confirm").post(totp::confirm))
            .service(web::resource("/me/events").get(audit::list))
            .service(
                web::resource("/me/passkeys")
                    .get(passkeys::list)
                    .post(passkeys::register),
            )
            .service(web::resource("/me/passkeys/options").post(passkeys::registration_options))
            .service(web::resource("/me/passkeys/{id}").delete(passkeys::remove))
            .service(web::resource("/email/verify").post(recovery::verify_email))
            .service(web::resource("/email/verification").post(recovery::resend_verification))
            .service(web::resource("/password/forgot").post(recovery::forgot_password))
            .service(web::resource("/password/reset").post(recovery::reset_password))
            .service(web::resource("/users").get(account::search))
            .service(web::resource("/users/{id}").get(account::profile))
            .service(web::resource("/.well-known/jwks.json").get(jwks))
            .service(web::resource("/healthz").get(healthz))
            .service(web::resource("/readyz").get(readyz)),
    );
}

/// Body of register, login and refresh answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub user: User,
    /// The access token (a JWT signed with Ed25519): keep it in memory only.
    pub access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 300)]
    pub expires_in: u64,
}

/// `POST /auth/register` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterRequest {
    /// 3–32 of `A–Z a–z 0–9 _ . -`, starting with a letter or digit; unique, case-insensitive.
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )]
    pub username: String,
    /// Up to 254 characters; unique, case-insensitive.
    #[schema(example = "alice@example.com", max_length = 254)]
    pub email: String,
    /// 8 characters to 72 bytes (bcrypt's limit, enforced rather than truncated).
    #[schema(example = "correct horse battery")]
    pub password: String,
    /// 1–64 characters; the username when absent.
    #[schema(example = "Alice", min_length = 1, max_length = 64)]
    pub display_name: Option<String>,
}

/// `POST /auth/login` body: `login` is a username or an email address.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub login: String,
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// Maps a unique violation on users to a 409 naming the field.
pub fn taken(e: tokio_postgres::Error) -> ApiError {
    match unique_violation(&e) {
        Some("users_username_key") => ApiError::Conflict("username is taken".into()),
        Some("users_email_key") => ApiError::Conflict("email is already registered".into()),
        _ => e.into(),
    }
}

/// `POST /auth/register`: 201 with tokens and the refresh cookie; 409 if the username or email
/// is taken; 422 for invalid fields.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest, security(()),
    responses((status = 201, description = "Registered and signed in: the access token in the body, the refresh token in the `__Secure-refresh_token` cookie (HttpOnly, SameSite=Strict, Path=/auth, Secure).",
        body = TokenResponse, headers(("Set-Cookie" = String, description = "__Secure-refresh_token=…; HttpOnly; SameSite=Strict; Path=/auth; Secure (refresh_token=… without Secure when COOKIE_SECURE=false)")))))]
pub(crate) async fn register(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = FieldErrors::new();
    let username = field(&mut errors, "username", Username::parse(&body.username));
    let email = field(&mut errors, "email", Email::parse(&body.email));
    let display_name = field(
        &mut errors,
        "display_name",
        DisplayName::parse(body.display_name.as_deref().unwrap_or(&body.username)),
    );
    password::validate("password", &body.password, &mut errors);
    ApiError::check(errors)?;
    let (Some(username), Some(email), Some(display_name)) = (username, email, display_name) else {
        return Err(anyhow::anyhow!("a field parsed with errors unrecorded").into());
    };

    let hash = password::hash(body.password, state.cfg.bcrypt_cost).await?;
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_one_t(
            &format!(
                "INSERT INTO auth.users (id, username, email, display_name, password_hash)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &username.as_str(),
                &email.as_str(),
                &display_name.as_str(),
                &hash,
            ],
        )
        .await
        .map_err(taken)?;
    let user = User::from_row(&row);
    let (session_id, token) = session::start(&tx, &state, &req, user.id).await?;
    recovery::send_verification(&tx, &state, user.id, &user.display_name, &user.email, false)
        .await?;
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::AccountCreated,
        Some(user.id),
        Some(session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    state.outbox.notify();
    tracing::info!(user.id = %user.id, "account registered");
    signed_in(&state, user, session_id, token, StatusCode::CREATED)
}

/// `POST /auth/login`: 200 with tokens and the refresh cookie. 401 alike — in answer and in
/// time (a dummy bcrypt hash stands in) — for an unknown login, a wrong password or a deleted
/// account. Attempts are counted before the password is checked, per name as typed and per
/// account: past `LOGIN_MAX_FAILURES` within the window the name answers 429 with
/// `Retry-After` until the lockout passes, whether or not an account has it; an account
/// locked through another of its names answers 401 (see [`attempts`]). With two-factor
/// sign-in on, a right password answers 202 with a challenge instead (no tokens, no cookie),
/// answered by `POST /auth/login/mfa` ([`mfa`]).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest, security(()),
    responses((status = 200, description = "Signed in: a new session.", body = TokenResponse,
        headers(("Set-Cookie" = String, description = "__Secure-refresh_token=…; HttpOnly; SameSite=Strict; Path=/auth; Secure (refresh_token=… without Secure when COOKIE_SECURE=false)"))),
        (status = 202, description = "The password is right and the account signs in with a second factor: answer the challenge at POST /auth/login/mfa.", body = mfa::Challenge)))]
pub(crate) async fn login(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let login = body.login.trim().to_lowercase();
    let mut db = state.db.get().await?;
    let row = db
        .query_opt_t(
            &format!(
                "SELECT {USER_COLUMNS}, password_hash FROM auth.users
                 WHERE (lower(username) = $1 OR lower(email) = $1) AND deleted_at IS NULL"
            ),
            &[&login],
        )
        .await?;
    // Counted before bcrypt (see `attempts`): on the name as typed, then on the account. A
    // locked account is checked against the dummy hash, so it answers like a wrong password.
    let name = attempts::Key::Login(login.clone());
    attempts::begin(&db, &state, &name).await?;
    let account = row.as_ref().map(|r| attempts::Key::Account(r.get("id")));
    let account_locked = match &account {
        Some(key) => attempts::count(&db, &state, key).await?.is_some(),
        None => false,
    };
    let stored: Option<String> = row
        .as_ref()
        .filter(|_| !account_locked)
        .map(|r| r.get("password_hash"));
    let ok = password::verify(body.password, stored, state.cfg.bcrypt_cost).await?;
    let client = audit::Client::of(&req);
    let (Some(row), Some(account), true) = (row.as_ref(), account, ok) else {
        let user_id = row.as_ref().map(|r| r.get::<_, Uuid>("id"));
        audit::record(&db, Kind::SignInFailed, user_id, None, &client, None).await?;
        return Err(ApiError::unauthorized("invalid login or password"));
    };
    let user = User::from_row(row);
    if state.cfg.require_verified_email && !user.email_verified {
        return Err(unverified_email());
    }
    let tx = db.transaction().await?;
    attempts::succeeded(&tx, &name).await?;
    attempts::succeeded(&tx, &account).await?;
    if totp::enabled(&tx, user.id).await? {
        // The password checked out; the code comes next (POST /auth/login/mfa).
        let answer = mfa::challenge(&tx, user.id).await?;
        tx.commit().await?;
        tracing::info!(user.id = %user.id, "password accepted; second factor asked for");
        return Ok(answer);
    }
    let (session_id, token) = session::start(&tx, &state, &req, user.id).await?;
    audit::record(
        &tx,
        Kind::SignedIn,
        Some(user.id),
        Some(session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, "signed in");
    signed_in(&state, user, session_id, token, StatusCode::OK)
}

/// The 403 of a sign-in while the address is unconfirmed and `REQUIRE_VERIFIED_EMAIL` is on.
pub(crate) fn unverified_email() -> ApiError {
    ApiError::Forbidden(
        "confirm your email address first: follow the link we mailed you, or ask for a new one (POST /auth/email/verification with {\"email\"})".into(),
    )
}

fn refresh_cookie(state: &State, token: String) -> Cookie<'static> {
    let max_age = i64::try_from(state.cfg.refresh_ttl.as_secs()).unwrap_or(i64::MAX);
    refresh::cookie(token, max_age, state.cfg.web.cookie_secure)
}

/// The answer of a completed sign-in: 200/201 with the tokens and the refresh cookie.
///
/// Errors: the access token cannot be signed.
pub(crate) fn signed_in(
    state: &State,
    user: User,
    session_id: Uuid,
    refresh_token: String,
    status: StatusCode,
) -> Result<HttpResponse, ApiError> {
    let access_token = session::access_token(state, user.id, session_id)?;
    Ok(HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(refresh_cookie(state, refresh_token))
        .json(TokenResponse {
            user,
            access_token,
            token_type: "Bearer",
            expires_in: state.cfg.access_ttl.as_secs(),
        }))
}

/// CSRF defence for cookie-authenticated endpoints (DESIGN.md §2): the `X-CSRF: 1` header,
/// which a cross-site form cannot set, and an `Origin`, when sent, from the allow-list.
///
/// Errors: 403 naming what is missing or refused.
pub fn check_csrf(state: &State, req: &HttpRequest) -> Result<(), ApiError> {
    let csrf = req.headers().get("x-csrf").and_then(|v| v.to_str().ok());
    if csrf != Some("1") {
        return Err(ApiError::Forbidden("missing X-CSRF: 1 header".into()));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !state.cfg.web.allowed_origins.iter().any(|o| o == origin) {
            return Err(ApiError::Forbidden("origin not allowed".into()));
        }
    }
    Ok(())
}

/// A 401 that also deletes the refresh cookie.
fn refresh_rejected(state: &State, detail: &str) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::unauthorized(detail));
    let _ = res.add_cookie(&refresh::clear_cookie(state.cfg.web.cookie_secure));
    res
}

/// `POST /auth/refresh` (cookie + `X-CSRF`): rotates the refresh token and returns a new
/// access token. A rotated token presented again is reuse (RFC 9700 §4.14) — the whole
/// session is revoked and its sockets closed — except within the grace window, where the
/// immediately previous token (its successor still unused) gets that same successor back, so
/// two tabs refreshing at once do not sign the user out. 401 clears the cookie.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    security(("refresh_cookie" = [], "csrf" = [])),
    responses((status = 200, description = "A new access token; the refresh cookie is rotated.", body = TokenResponse,
        headers(("Set-Cookie" = String, description = "the successor refresh token, in the same cookie")))))]
pub(crate) async fn refresh_session(
    state: web::Data<State>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&state, &req)?;
    let Some(cookie) = req
        .cookie(refresh::cookie_name(state.cfg.web.cookie_secure))
        .filter(|c| !c.value().is_empty())
    else {
        return Ok(refresh_rejected(&state, "no refresh token"));
    };
    let presented = cookie.value().to_owned();
    let presented_hash = refresh::hash(&presented);
    // The successor under each refresh key, the signing key's first: a new rotation uses
    // that one; a grace-window refresh hands back whichever one the rotation stored, so the
    // key can rotate between two tabs' refreshes.
    let successors: Vec<(String, Vec<u8>)> = state
        .cfg
        .refresh_keys
        .keys()
        .iter()
        .map(|k| {
            let s = refresh::successor(k, &presented);
            let h = refresh::hash(&s);
            (s, h)
        })
        .collect();
    let Some((mut successor, mut successor_hash)) = successors.first().cloned() else {
        return Err(ApiError::Internal(anyhow::anyhow!("no refresh key")));
    };
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_opt_t(
            &format!(
                "SELECT rt.session_id, rt.rotated_at IS NOT NULL AS rotated,
                        rt.rotated_at > now() - make_interval(secs => $2) AS in_grace,
                        rt.successor_hash,
                        s.revoked_at IS NOT NULL AS revoked,
                        s.expires_at <= now()
                          OR s.last_used_at <= now() - make_interval(secs => $3) AS expired,
                        u.deleted_at IS NOT NULL AS deleted,
                        {}
                 FROM auth.refresh_tokens rt
                 JOIN auth.sessions s ON s.id = rt.session_id
                 JOIN auth.users u ON u.id = s.user_id
                 WHERE rt.token_hash = $1
                 FOR UPDATE OF rt, s",
                USER_COLUMNS
                    .split(", ")
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[
                &presented_hash,
                &state.cfg.refresh_grace.as_secs_f64(),
                &state.cfg.refresh_idle.as_secs_f64(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(refresh_rejected(&state, "refresh token not recognised"));
    };
    let session_id: Uuid = row.get("session_id");
    let user = User::from_row(&row);
    if row.get::<_, bool>("revoked") || row.get::<_, bool>("deleted") {
        return Ok(refresh_rejected(&state, "session has ended"));
    }
    if row.get::<_, bool>("expired") {
        let ended = session::end(&tx, user.id, Which::Only(session_id), EndReason::Expired).await?;
        tx.commit().await?;
        tracing::info!(session.id = %session_id, ended = ended.len(), "session expired");
        return Ok(refresh_rejected(
            &state,
            "session has expired; sign in again",
        ));
    }
    if row.get::<_, bool>("rotated") {
        let stored: Option<Vec<u8>> = row.get("successor_hash");
        let issued = successors
            .into_iter()
            .find(|(_, h)| stored.as_ref() == Some(h));
        let in_grace = row.get::<_, bool>("in_grace") && issued.is_some();
        if let Some((s, h)) = issued {
            (successor, successor_hash) = (s, h);
        }
        let successor_unused = in_grace
            && tx
                .query_opt_t(
                    "SELECT 1 FROM auth.refresh_tokens WHERE token_hash = $1 AND rotated_at IS NULL",
                    &[&successor_hash],
                )
                .await?
                .is_some();
        if !successor_unused {
            let ended =
                session::end(&tx, user.id, Which::Only(session_id), EndReason::Reuse).await?;
            let client = audit::Client::of(&req);
            audit::record(
                &tx,
                Kind::RefreshReuse,
                Some(user.id),
                Some(session_id),
                &client,
                None,
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(session.id = %session_id, "refresh token reuse; session revoked");
            tracing::debug!(ended = ended.len(), "family ended");
            return Ok(refresh_rejected(
                &state,
                "refresh token reuse detected; session revoked",
            ));
        }
        tracing::info!(session.id = %session_id, "concurrent refresh within the grace window");
    } else {
        tx.execute_t(
            "UPDATE auth.refresh_tokens SET rotated_at = now(), successor_hash = $2
             WHERE token_hash = $1",
            &[&presented_hash, &successor_hash],
        )
        .await?;
        tx.execute_t(
            "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
            &[&successor_hash, &session_id],
        )
        .await?;
    }
    tx.execute_t(
        "UPDATE auth.sessions SET last_used_at = now() WHERE id = $1",
        &[&session_id],
    )
    .await?;
    tx.commit().await?;
    signed_in(&state, user, session_id, successor, StatusCode::OK)
}

/// `POST /auth/logout` (cookie + `X-CSRF`): revokes the session, closes its sockets, clears the
/// cookie. 204 even when the cookie is missing or already invalid, so logout is idempotent.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    security(("refresh_cookie" = [], "csrf" = [])),
    responses((status = 204, description = "Signed out: the session is revoked and the cookie cleared.",
        headers(("Set-Cookie" = String, description = "__Secure-refresh_token=; Max-Age=0 (refresh_token when COOKIE_SECURE=false)")))))]
pub(crate) async fn logout(
    state: web::Data<State>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&state, &req)?;
    if let Some(cookie) = req
        .cookie(refresh::cookie_name(state.cfg.web.cookie_secure))
        .filter(|c| !c.value().is_empty())
    {
        let mut db = state.db.get().await?;
        let tx = db.transaction().await?;
        let owner = tx
            .query_opt_t(
                "SELECT s.user_id, s.id FROM auth.refresh_tokens rt
                 JOIN auth.sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1",
                &[&refresh::hash(cookie.value())],
            )
            .await?;
        if let Some(row) = owner {
            let (user_id, session_id): (Uuid, Uuid) = (row.get(0), row.get(1));
            session::end(&tx, user_id, Which::Only(session_id), EndReason::Logout).await?;
            let client = audit::Client::of(&req);
            audit::record(
                &tx,
                Kind::SessionEnded,
                Some(user_id),
                Some(session_id),
                &client,
                Some("sign-out"),
            )
            .await?;
            tracing::info!(session.id = %session_id, "signed out");
        }
        tx.commit().await?;
    }
    Ok(HttpResponse::NoContent()
        .cookie(refresh::clear_cookie(state.cfg.web.cookie_secure))
        .finish())
}

/// `GET /auth/.well-known/jwks.json`: every published public key (RFC 7517).
#[utoipa::path(get, path = "/auth/.well-known/jwks.json", tag = "auth", security(()),
    responses((status = 200, description = "The public signing keys (RFC 7517).", body = crate::platform::access::JwksSchema)))]
pub(crate) async fn jwks(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.keys.jwks())
}

/// `GET /auth/healthz`: 200 while the process serves requests.
#[utoipa::path(get, path = "/auth/healthz", tag = "operations", operation_id = "auth_healthz", security(()),
    responses((status = 200, description = "Alive.", body = crate::platform::http::Health)))]
pub(crate) async fn healthz() -> actix_web::HttpResponse {
    crate::platform::http::healthz().await
}

/// `GET /auth/readyz`: 200 when the primary answers.
#[utoipa::path(get, path = "/auth/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready: the primary answers.", body = crate::platform::http::Readiness),
        (status = 503, description = "Not ready.", body = crate::platform::http::Readiness)))]
pub(crate) async fn readyz(state: web::Data<State>) -> HttpResponse {
    // Within PING_TIMEOUT, on the service's monitor connection, not a request connection:
    // a full request pool is load, not a primary that is down.
    let primary = crate::platform::db::ping(&state.monitor).await;
    crate::platform::http::readiness(primary, serde_json::json!({ "primary": primary }))
}
