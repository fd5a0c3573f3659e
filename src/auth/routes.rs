//! Handlers of the auth service (`/auth/*`, DESIGN.md §3).

use actix_web::{
    cookie::Cookie,
    http::header,
    web::{self, Json},
    HttpRequest, HttpResponse,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{password, refresh, validate, State};
use crate::{
    access::AccessClaims,
    error::{unique_violation, ApiError, FieldErrors},
    realtime::bus::{self, BusEvent},
};

/// Registers the auth routes under `/auth`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        // Resources (not bare routes) so a known path with the wrong method answers 405.
        web::scope("/auth")
            .service(web::resource("/register").post(register))
            .service(web::resource("/login").post(login))
            .service(web::resource("/refresh").post(refresh_session))
            .service(web::resource("/logout").post(logout))
            .service(web::resource("/.well-known/jwks.json").get(jwks))
            .service(web::resource("/healthz").get(crate::http::healthz))
            .service(web::resource("/readyz").get(readyz)),
    );
}

/// A user as the account owner sees it.
#[derive(Debug, Serialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

impl User {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            id: row.get("id"),
            username: row.get("username"),
            email: row.get("email"),
            display_name: row.get("display_name"),
            created_at: row.get("created_at"),
        }
    }
}

/// Body of register and login answers.
#[derive(Serialize)]
struct TokenResponse {
    user: User,
    access_token: String,
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
}

/// `POST /auth/register` body.
#[derive(Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: Option<String>,
}

/// `POST /auth/login` body: `login` is a username or an email address.
#[derive(Deserialize)]
pub struct LoginRequest {
    pub login: String,
    pub password: String,
}

const USER_COLUMNS: &str = "id, username, email, display_name, created_at";

/// `POST /auth/register`: 201 with tokens and the refresh cookie; 409 if the username or email
/// is taken; 422 for invalid fields.
async fn register(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let username = body.username.trim().to_owned();
    let email = body.email.trim().to_owned();
    let display_name = body
        .display_name
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|| username.clone());
    let mut errors = FieldErrors::new();
    validate::username(&username, &mut errors);
    validate::email(&email, &mut errors);
    validate::display_name(&display_name, &mut errors);
    password::validate("password", &body.password, &mut errors);
    ApiError::check(errors)?;

    let hash = password::hash(body.password, state.cfg.bcrypt_cost).await?;
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let id = Uuid::now_v7();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO auth.users (id, username, email, display_name, password_hash)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
            ),
            &[&id, &username, &email, &display_name, &hash],
        )
        .await
        .map_err(|e| match unique_violation(&e) {
            Some("users_username_key") => ApiError::Conflict("username is taken".into()),
            Some("users_email_key") => ApiError::Conflict("email is already registered".into()),
            _ => e.into(),
        })?;
    let user = User::from_row(&row);
    let (session_id, token) = start_session(&tx, &state, &req, user.id).await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, "account registered");
    signed_in(
        &state,
        user,
        session_id,
        token,
        actix_web::http::StatusCode::CREATED,
    )
}

/// `POST /auth/login`: 200 with tokens and the refresh cookie; 401 for an unknown login, a
/// wrong password or a deleted account, all alike in answer and time.
async fn login(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let login = body.login.trim().to_owned();
    let mut db = state.db.get().await?;
    let row = db
        .query_opt(
            &format!(
                "SELECT {USER_COLUMNS}, password_hash FROM auth.users
                 WHERE (lower(username) = lower($1) OR lower(email) = lower($1))
                   AND deleted_at IS NULL"
            ),
            &[&login],
        )
        .await?;
    let stored: Option<String> = row.as_ref().map(|r| r.get("password_hash"));
    let ok = password::verify(body.password, stored, state.cfg.bcrypt_cost).await?;
    let row = match row {
        Some(r) if ok => r,
        _ => return Err(ApiError::unauthorized("invalid login or password")),
    };
    let user = User::from_row(&row);
    let tx = db.transaction().await?;
    let (session_id, token) = start_session(&tx, &state, &req, user.id).await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, "signed in");
    signed_in(
        &state,
        user,
        session_id,
        token,
        actix_web::http::StatusCode::OK,
    )
}

/// Creates a session (refresh token family) and its first refresh token.
async fn start_session(
    tx: &impl GenericClient,
    state: &State,
    req: &HttpRequest,
    user_id: Uuid,
) -> Result<(Uuid, String), ApiError> {
    let session_id = Uuid::now_v7();
    let user_agent: Option<String> = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect());
    let ip: Option<String> = req
        .connection_info()
        .realip_remote_addr()
        .map(str::to_owned);
    let ttl = i64::try_from(state.cfg.refresh_ttl.as_secs()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO auth.sessions (id, user_id, expires_at, user_agent, ip)
         VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5)",
        &[&session_id, &user_id, &(ttl as f64), &user_agent, &ip],
    )
    .await?;
    let (token, hash) = refresh::generate();
    tx.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
        &[&hash, &session_id],
    )
    .await?;
    Ok((session_id, token))
}

fn access_token(state: &State, user_id: Uuid, session_id: Uuid) -> Result<String, ApiError> {
    let now = Utc::now().timestamp();
    let ttl = i64::try_from(state.cfg.access_ttl.as_secs()).unwrap_or(300);
    let claims = AccessClaims {
        iss: state.cfg.tokens.issuer.clone(),
        aud: state.cfg.tokens.audience.clone(),
        sub: user_id,
        sid: session_id,
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: Uuid::now_v7(),
    };
    Ok(state.keys.sign(&claims)?)
}

fn refresh_cookie(state: &State, token: String) -> Cookie<'static> {
    let max_age = i64::try_from(state.cfg.refresh_ttl.as_secs()).unwrap_or(i64::MAX);
    refresh::cookie(token, max_age, state.cfg.cookie_secure)
}

fn signed_in(
    state: &State,
    user: User,
    session_id: Uuid,
    refresh_token: String,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse, ApiError> {
    let access_token = access_token(state, user.id, session_id)?;
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
fn check_csrf(state: &State, req: &HttpRequest) -> Result<(), ApiError> {
    let csrf = req.headers().get("x-csrf").and_then(|v| v.to_str().ok());
    if csrf != Some("1") {
        return Err(ApiError::Forbidden("missing X-CSRF: 1 header".into()));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !state.cfg.allowed_origins.iter().any(|o| o == origin) {
            return Err(ApiError::Forbidden("origin not allowed".into()));
        }
    }
    Ok(())
}

/// A 401 that also deletes the refresh cookie.
fn refresh_rejected(state: &State, detail: &str) -> HttpResponse {
    let mut res = actix_web::ResponseError::error_response(&ApiError::unauthorized(detail));
    let _ = res.add_cookie(&refresh::clear_cookie(state.cfg.cookie_secure));
    res
}

#[derive(Serialize)]
struct RefreshResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: User,
}

/// `POST /auth/refresh` (cookie + `X-CSRF`): rotates the refresh token and returns a new
/// access token. Presenting a token that was already rotated is reuse (RFC 9700 §4.14): the
/// whole session is revoked and its sockets are closed. 401 clears the cookie.
async fn refresh_session(
    state: web::Data<State>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    check_csrf(&state, &req)?;
    let Some(cookie) = req
        .cookie(refresh::COOKIE)
        .filter(|c| !c.value().is_empty())
    else {
        return Ok(refresh_rejected(&state, "no refresh token"));
    };
    let old_hash = refresh::hash(cookie.value());
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT rt.session_id, rt.rotated_at IS NOT NULL AS rotated,
                    s.revoked_at IS NOT NULL AS revoked, s.expires_at <= now() AS expired,
                    u.id, u.username, u.email, u.display_name, u.created_at,
                    u.deleted_at IS NOT NULL AS deleted
             FROM auth.refresh_tokens rt
             JOIN auth.sessions s ON s.id = rt.session_id
             JOIN auth.users u ON u.id = s.user_id
             WHERE rt.token_hash = $1
             FOR UPDATE OF rt, s",
            &[&old_hash],
        )
        .await?;
    let Some(row) = row else {
        return Ok(refresh_rejected(&state, "refresh token not recognised"));
    };
    let session_id: Uuid = row.get("session_id");
    if row.get::<_, bool>("revoked")
        || row.get::<_, bool>("expired")
        || row.get::<_, bool>("deleted")
    {
        return Ok(refresh_rejected(&state, "session has ended"));
    }
    if row.get::<_, bool>("rotated") {
        tx.execute(
            "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = 'reuse'
             WHERE id = $1 AND revoked_at IS NULL",
            &[&session_id],
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(session.id = %session_id, "refresh token reuse; session revoked");
        announce_session_end(&db, session_id, "reuse").await;
        return Ok(refresh_rejected(
            &state,
            "refresh token reuse detected; session revoked",
        ));
    }
    let (token, new_hash) = refresh::generate();
    tx.execute(
        "UPDATE auth.refresh_tokens SET rotated_at = now() WHERE token_hash = $1",
        &[&old_hash],
    )
    .await?;
    tx.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
        &[&new_hash, &session_id],
    )
    .await?;
    tx.execute(
        "UPDATE auth.sessions SET last_used_at = now() WHERE id = $1",
        &[&session_id],
    )
    .await?;
    tx.commit().await?;
    let user = User::from_row(&row);
    let access_token = access_token(&state, user.id, session_id)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(refresh_cookie(&state, token))
        .json(RefreshResponse {
            access_token,
            token_type: "Bearer",
            expires_in: state.cfg.access_ttl.as_secs(),
            user,
        }))
}

/// `POST /auth/logout` (cookie + `X-CSRF`): revokes the session, closes its sockets, clears the
/// cookie. 204 even when the cookie is missing or already invalid, so logout is idempotent.
async fn logout(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    check_csrf(&state, &req)?;
    if let Some(cookie) = req
        .cookie(refresh::COOKIE)
        .filter(|c| !c.value().is_empty())
    {
        let db = state.db.get().await?;
        let revoked = db
            .query_opt(
                "UPDATE auth.sessions s SET revoked_at = now(), revoked_reason = 'logout'
                 FROM auth.refresh_tokens rt
                 WHERE rt.token_hash = $1 AND s.id = rt.session_id AND s.revoked_at IS NULL
                 RETURNING s.id",
                &[&refresh::hash(cookie.value())],
            )
            .await?;
        if let Some(row) = revoked {
            let session_id: Uuid = row.get(0);
            tracing::info!(session.id = %session_id, "signed out");
            announce_session_end(&db, session_id, "logout").await;
        }
    }
    Ok(HttpResponse::NoContent()
        .cookie(refresh::clear_cookie(state.cfg.cookie_secure))
        .finish())
}

/// Tells every messaging instance (NOTIFY on the primary) that a session ended, so its
/// sockets close. Access tokens already issued stay valid until they expire (5 minutes).
async fn announce_session_end(db: &tokio_postgres::Client, session_id: Uuid, reason: &str) {
    let event = BusEvent::SessionRevoked {
        session_id,
        reason: reason.to_owned(),
    };
    if let Err(e) = bus::notify(db, &[event]).await {
        tracing::warn!(error = %e, "could not announce the end of a session");
    }
}

/// `GET /auth/.well-known/jwks.json`: every published public key (RFC 7517).
async fn jwks(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.keys.jwks())
}

/// `GET /auth/readyz`: 200 when the primary answers.
async fn readyz(state: web::Data<State>) -> HttpResponse {
    let primary = crate::db::ping(&state.db).await;
    crate::http::readiness(primary, serde_json::json!({ "primary": primary }))
}
