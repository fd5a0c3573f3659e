//! Passkeys (WebAuthn Level 3 discoverable credentials, through `webauthn-rs`): register one
//! from the security settings, sign in with it and no password, list and remove them.
//!
//! Each ceremony takes two requests — options, then the authenticator's answer — and its
//! state (the challenge, what the answer is checked against) waits in
//! `auth.webauthn_ceremonies` for [`CEREMONY_TTL`], single-use, so any instance can finish
//! it. Registration asks for a resident key and user verification (a passkey in the
//! WebAuthn sense: found by the authenticator without a user name, unlocked by PIN or
//! biometrics), so a sign-in starts without naming anyone and leaks nothing about who has
//! an account. Adding a passkey takes the account's password too, and with two-factor
//! sign-in on a code as well: a stolen access token alone cannot plant a lasting way in,
//! nor a token and a password one around the second factor. Removing a passkey ends the
//! sessions it signed in. A sign-in with a passkey is complete in itself (it
//! proves possession and user verification): no TOTP step follows.
//!
//! The relying party is `WEBAUTHN_RP_ID` (default: `PUBLIC_URL`'s host); answers are
//! accepted from `PUBLIC_URL`'s origin and `WEBAUTHN_ORIGINS`.

use std::time::Duration;

use actix_web::{
    http::StatusCode,
    web::{self, Json, Path},
    HttpRequest, HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use super::{
    account, attempts,
    audit::{self, Kind},
    caller::AuthCaller,
    mfa, routes,
    session::{self, EndReason, Which},
    totp,
    user::{User, USER_COLUMNS},
    State,
};
use crate::platform::{
    config::AuthConfig,
    db::{unique_violation, Traced},
    error::ApiError,
};

/// How long a ceremony waits for the authenticator's answer (WebAuthn's recommended
/// timeout for user verification is 300 s; the options carry the same).
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// Passkeys one account may hold.
pub const MAX_PASSKEYS: i64 = 20;

/// The relying party, built once at start: `WEBAUTHN_RP_ID` (else `PUBLIC_URL`'s host),
/// accepting answers from `PUBLIC_URL`'s origin and `WEBAUTHN_ORIGINS`.
///
/// Errors: no domain name to use (an IP address cannot be a relying party id, WebAuthn
/// Level 3 §5.1.4.1), the id is not an origin's host or a parent domain of it, or an origin
/// is not a URL.
pub fn relying_party(cfg: &AuthConfig) -> anyhow::Result<Webauthn> {
    let public_url = &cfg.mail.public_url;
    let origin =
        Url::parse(public_url).map_err(|e| anyhow::anyhow!("PUBLIC_URL {public_url:?}: {e}"))?;
    let rp_id = match cfg.webauthn_rp_id.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => id,
        None => origin.domain().ok_or_else(|| {
            anyhow::anyhow!("PUBLIC_URL {public_url:?} has no domain name; set WEBAUTHN_RP_ID (passkeys need one)")
        })?,
    };
    let mut builder = WebauthnBuilder::new(rp_id, &origin)
        .map_err(|e| {
            anyhow::anyhow!("WEBAUTHN_RP_ID {rp_id:?} is not the host of PUBLIC_URL or a parent domain of it: {e}")
        })?
        .rp_name("Switchboard")
        .timeout(CEREMONY_TTL);
    for extra in &cfg.webauthn_origins {
        let url = Url::parse(extra)
            .map_err(|e| anyhow::anyhow!("WEBAUTHN_ORIGINS entry {extra:?}: {e}"))?;
        builder = builder.append_allowed_origin(&url);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("WebAuthn relying party: {e}"))
}

/// Stores a ceremony's state; sweeps a few expired ones on the way (so rows from abandoned
/// ceremonies never pile up). Returns its id.
async fn save_ceremony(
    db: &impl Traced,
    kind: &str,
    user_id: Option<Uuid>,
    state: &impl Serialize,
) -> Result<Uuid, ApiError> {
    db.execute_t(
        "DELETE FROM auth.webauthn_ceremonies WHERE id IN (
             SELECT id FROM auth.webauthn_ceremonies WHERE expires_at < now() LIMIT 100)",
        &[],
    )
    .await?;
    let id = Uuid::new_v4();
    let state = to_json(state)?;
    db.execute_t(
        "INSERT INTO auth.webauthn_ceremonies (id, kind, user_id, state, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        &[&id, &kind, &user_id, &state, &CEREMONY_TTL.as_secs_f64()],
    )
    .await?;
    Ok(id)
}

/// Takes (deletes and returns) a live ceremony of `kind` (and `user_id`, for registration).
///
/// Errors: 400 when it is unknown, expired, used, or another user's.
async fn take_ceremony<T: serde::de::DeserializeOwned>(
    db: &impl Traced,
    id: Uuid,
    kind: &str,
    user_id: Option<Uuid>,
) -> Result<T, ApiError> {
    let row = db
        .query_opt_t(
            "DELETE FROM auth.webauthn_ceremonies
             WHERE id = $1 AND kind = $2 AND user_id IS NOT DISTINCT FROM $3 AND expires_at > now()
             RETURNING state",
            &[&id, &kind, &user_id],
        )
        .await?;
    let state = row
        .map(|r| r.get::<_, serde_json::Value>(0))
        .ok_or_else(|| {
            ApiError::BadRequest("this passkey request expired or was used; start again".into())
        })?;
    serde_json::from_value(state).map_err(|e| ApiError::Internal(e.into()))
}

/// A registered passkey as its owner sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasskeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The last sign-in with it; null if never used.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// `GET /auth/me/passkeys` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyInfo>,
}

/// Options for the browser: `navigator.credentials.create({publicKey})` or `.get(...)`
/// after decoding the base64url fields; answer with `ceremony`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CeremonyOptions {
    /// Single-use; valid 300 s.
    pub ceremony: Uuid,
    /// WebAuthn's `PublicKeyCredentialCreationOptions` / `…RequestOptions` in their JSON form
    /// (binary fields base64url), under `publicKey`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// `POST /auth/me/passkeys/options` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegistrationStart {
    /// The account's password (adding a way to sign in takes it, not only a token).
    #[schema(max_length = 1024)]
    pub password: String,
    /// With two-factor sign-in on: a fresh TOTP code or a recovery code too (a passkey
    /// signs in without the second factor, so adding one takes it).
    #[schema(max_length = 32)]
    pub code: Option<String>,
}

/// `POST /auth/me/passkeys` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegistrationFinish {
    pub ceremony: Uuid,
    /// 1–64 characters, shown in the list ("Laptop", "Phone").
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create`, JSON-encoded (WebAuthn
    /// Level 3 `toJSON()`: `id`, `rawId`, `type`, `response.{clientDataJSON,
    /// attestationObject}` base64url).
    #[schema(value_type = Object)]
    pub credential: RegisterPublicKeyCredential,
}

/// `POST /auth/login/passkey` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignInFinish {
    pub ceremony: Uuid,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, JSON-encoded (`id`,
    /// `rawId`, `type`, `response.{clientDataJSON, authenticatorData, signature, userHandle}`
    /// base64url).
    #[schema(value_type = Object)]
    pub credential: PublicKeyCredential,
}

fn to_json(value: &impl Serialize) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

fn wrong_passkey() -> ApiError {
    ApiError::unauthorized("that passkey was not accepted; try again or sign in with your password")
}

/// `GET /auth/me/passkeys`: the caller's passkeys, oldest first.
#[utoipa::path(get, path = "/auth/me/passkeys", operation_id = "list_passkeys", tag = "passkeys",
    responses((status = 200, description = "The caller's passkeys, oldest first.", body = PasskeyList)))]
pub async fn list(state: web::Data<State>, caller: AuthCaller) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    let rows = db
        .query_t(
            "SELECT id, name, created_at, last_used_at FROM auth.passkeys
             WHERE user_id = $1 ORDER BY created_at, id",
            &[&caller.user_id],
        )
        .await?;
    let passkeys = rows
        .iter()
        .map(|r| PasskeyInfo {
            id: r.get("id"),
            name: r.get("name"),
            created_at: r.get("created_at"),
            last_used_at: r.get("last_used_at"),
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(PasskeyList { passkeys }))
}

/// `POST /auth/me/passkeys/options` `{password, code?}`: starts registering a passkey. 200
/// with the creation options (a resident key with user verification; the caller's passkeys
/// excluded, so one authenticator is not registered twice). 403 for a wrong password (it
/// counts toward the account's sign-in lockout, then 429) or, with two-factor sign-in on, a
/// missing or wrong `code` (counted like second-factor codes); 409 at 20 passkeys.
#[utoipa::path(post, path = "/auth/me/passkeys/options", operation_id = "passkey_registration_options", tag = "passkeys", request_body = RegistrationStart,
    responses((status = 200, description = "Creation options for navigator.credentials.create; answer at POST /auth/me/passkeys.",
        body = CeremonyOptions)))]
pub async fn registration_options(
    state: web::Data<State>,
    caller: AuthCaller,
    body: Json<RegistrationStart>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut db = state.db.get().await?;
    account::confirm_password(&state, &db, caller.user_id, body.password).await?;
    if totp::enabled(&db, caller.user_id).await? {
        let second_factor = attempts::Key::SecondFactor(caller.user_id);
        attempts::begin(&db, &state, &second_factor).await?;
        let tx = db.transaction().await?;
        let code = body.code.as_deref().unwrap_or_default();
        let proven = totp::accept_code(&tx, caller.user_id, code, true).await?
            || mfa::use_recovery_code(&tx, caller.user_id, code).await?;
        if !proven {
            return Err(ApiError::Forbidden(
                "two-factor sign-in is on: give a fresh code from the authenticator (or a recovery code) as `code`".into(),
            ));
        }
        attempts::succeeded(&tx, &second_factor).await?;
        tx.commit().await?;
    }
    let user = db
        .query_opt_t(
            &format!("SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1 AND deleted_at IS NULL"),
            &[&caller.user_id],
        )
        .await?
        .map(|r| User::from_row(&r))
        .ok_or_else(|| ApiError::bearer("session has ended"))?;
    let tx = db.transaction().await?;
    let existing = tx
        .query_t(
            "SELECT passkey FROM auth.passkeys WHERE user_id = $1",
            &[&user.id],
        )
        .await?;
    if i64::try_from(existing.len()).unwrap_or(i64::MAX) >= MAX_PASSKEYS {
        return Err(ApiError::Conflict(format!(
            "an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
        )));
    }
    let exclude = existing
        .iter()
        .filter_map(|r| serde_json::from_value::<Passkey>(r.get(0)).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let (mut options, registration) = state
        .webauthn
        .start_passkey_registration(user.id, &user.username, &user.display_name, Some(exclude))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("WebAuthn registration options: {e}")))?;
    // A passkey is a discoverable credential (WebAuthn Level 3 §6.2.2): sign-in starts
    // without a user name, so the authenticator must keep the credential.
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
    }
    let ceremony = save_ceremony(&tx, "registration", Some(user.id), &registration).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(CeremonyOptions {
            ceremony,
            options: to_json(&options)?,
        }))
}

/// `POST /auth/me/passkeys` `{ceremony, name, credential}`: finishes a registration. 201
/// with the passkey; 400 for a ceremony that is unknown, expired, used or another user's,
/// or an answer that does not verify (wrong challenge or origin, no user verification);
/// 409 if that credential is registered already; 422 for a bad name.
#[utoipa::path(post, path = "/auth/me/passkeys", operation_id = "register_passkey", tag = "passkeys", request_body = RegistrationFinish,
    responses((status = 201, description = "Registered.", body = PasskeyInfo)))]
pub async fn register(
    state: web::Data<State>,
    caller: AuthCaller,
    req: HttpRequest,
    body: Json<RegistrationFinish>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "1 to 64 characters, no control characters",
        ));
    }
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    let registration: PasskeyRegistration =
        take_ceremony(&tx, body.ceremony, "registration", Some(caller.user_id)).await?;
    let passkey = match state
        .webauthn
        .finish_passkey_registration(&body.credential, &registration)
    {
        Ok(passkey) => passkey,
        Err(e) => {
            // The used ceremony stays used: commit its deletion.
            tx.commit().await?;
            tracing::info!(user.id = %caller.user_id, error = %e, "passkey registration refused");
            return Err(ApiError::BadRequest(format!(
                "the authenticator's answer did not verify: {e}"
            )));
        }
    };
    let credential_id: &[u8] = passkey.cred_id().as_ref();
    if !(16..=1023).contains(&credential_id.len()) {
        tx.commit().await?;
        return Err(ApiError::BadRequest(
            "the credential id must be 16 to 1023 bytes (WebAuthn Level 3 §5.1)".into(),
        ));
    }
    // The cap again, under the user's row lock: options fetched in parallel cannot pass it.
    let held: i64 = tx
        .query_one_t(
            "SELECT count(*) FROM auth.passkeys
             WHERE user_id = (SELECT id FROM auth.users WHERE id = $1 FOR UPDATE)",
            &[&caller.user_id],
        )
        .await?
        .get(0);
    if held >= MAX_PASSKEYS {
        tx.commit().await?;
        return Err(ApiError::Conflict(format!(
            "an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
        )));
    }
    let id = Uuid::now_v7();
    let stored = to_json(&passkey)?;
    let row = tx
        .query_one_t(
            "INSERT INTO auth.passkeys (id, user_id, credential_id, passkey, name)
             VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
            &[&id, &caller.user_id, &credential_id, &stored, &name],
        )
        .await
        .map_err(|e| match unique_violation(&e) {
            Some("passkeys_credential_id_key") => {
                ApiError::Conflict("this passkey is registered already".into())
            }
            _ => e.into(),
        })?;
    audit::record(
        &tx,
        Kind::PasskeyAdded,
        Some(caller.user_id),
        Some(caller.session_id),
        &audit::Client::of(&req),
        Some(name),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, passkey.id = %id, "passkey registered");
    Ok(HttpResponse::Created().json(PasskeyInfo {
        id,
        name: name.to_owned(),
        created_at: row.get(0),
        last_used_at: None,
    }))
}

/// `DELETE /auth/me/passkeys/{id}`: removes one of the caller's passkeys and ends every
/// session signed in with it (their refresh tokens fail, their sockets close; the caller's
/// own too, if it was one). 204; 404 if it is not the caller's (or gone already).
#[utoipa::path(delete, path = "/auth/me/passkeys/{id}", operation_id = "remove_passkey", tag = "passkeys",
    params(("id" = Uuid, Path, description = "The passkey")),
    responses((status = 204, description = "Removed: it no longer signs in.")))]
pub async fn remove(
    state: web::Data<State>,
    caller: AuthCaller,
    req: HttpRequest,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let passkey_id = id.into_inner();
    let mut db = state.db.get().await?;
    let tx = db.transaction().await?;
    // Before the delete, which unlinks the sessions (ON DELETE SET NULL); only the caller's
    // sessions can match, and a 404 below rolls it back.
    let ended = session::end(
        &tx,
        caller.user_id,
        Which::SignedInWith(passkey_id),
        EndReason::Revoked,
    )
    .await?;
    let row = tx
        .query_opt_t(
            "DELETE FROM auth.passkeys WHERE id = $1 AND user_id = $2 RETURNING name",
            &[&passkey_id, &caller.user_id],
        )
        .await?;
    let Some(row) = row else {
        return Err(ApiError::NotFound("no such passkey".into()));
    };
    let name: String = row.get(0);
    audit::record(
        &tx,
        Kind::PasskeyRemoved,
        Some(caller.user_id),
        Some(caller.session_id),
        &audit::Client::of(&req),
        Some(&name),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, passkey.id = %passkey_id, sessions.ended = ended.len(), "passkey removed");
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /auth/login/passkey/options`: starts a passkey sign-in. 200 with request options
/// (no credentials listed: the authenticator offers the passkeys it holds for this site).
#[utoipa::path(post, path = "/auth/login/passkey/options", operation_id = "passkey_sign_in_options", tag = "auth", security(()),
    responses((status = 200, description = "Request options for navigator.credentials.get; answer at POST /auth/login/passkey.",
        body = CeremonyOptions)))]
pub async fn sign_in_options(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let (mut options, authentication) = state
        .webauthn
        .start_discoverable_authentication()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("WebAuthn request options: {e}")))?;
    // webauthn-rs marks these for conditional mediation (autofill); the web client asks
    // with a button, so the browser's modal prompt is wanted.
    options.mediation = None;
    let db = state.db.get().await?;
    let ceremony = save_ceremony(&db, "authentication", None, &authentication).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(CeremonyOptions {
            ceremony,
            options: to_json(&options)?,
        }))
}

/// `POST /auth/login/passkey` `{ceremony, credential}`: finishes a passkey sign-in. 200 with
/// tokens and the refresh cookie, as `POST /auth/login` (no second factor follows). 400 for a
/// ceremony that is unknown, expired or used; 401 for a passkey that is not registered (or
/// was removed), an answer that does not verify, a signature counter that went backwards
/// (a cloned authenticator), or a deleted account; 403 while the address is unconfirmed
/// and `REQUIRE_VERIFIED_EMAIL` is on.
#[utoipa::path(post, path = "/auth/login/passkey", operation_id = "sign_in_with_passkey", tag = "auth", request_body = SignInFinish, security(()),
    responses((status = 200, description = "Signed in: a new session.", body = routes::TokenResponse)))]
pub async fn sign_in(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<SignInFinish>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let client = audit::Client::of(&req);
    let mut db = state.db.get().await?;
    let authentication: DiscoverableAuthentication = {
        let tx = db.transaction().await?;
        let state = take_ceremony(&tx, body.ceremony, "authentication", None).await?;
        tx.commit().await?;
        state
    };
    let Ok((user_id, credential_id)) = state
        .webauthn
        .identify_discoverable_authentication(&body.credential)
    else {
        return Err(wrong_passkey());
    };
    let tx = db.transaction().await?;
    // Locked for the counter update: two answers with one credential take turns.
    let row = tx
        .query_opt_t(
            "SELECT p.id, p.passkey FROM auth.passkeys p
             WHERE p.credential_id = $1 AND p.user_id = $2
             FOR UPDATE",
            &[&credential_id, &user_id],
        )
        .await?;
    let stored = row.as_ref().and_then(|r| {
        serde_json::from_value::<Passkey>(r.get("passkey"))
            .ok()
            .map(|p| (r.get::<_, Uuid>("id"), p))
    });
    let Some((passkey_id, mut passkey)) = stored else {
        drop(tx);
        audit::record(
            &db,
            Kind::SignInFailed,
            None,
            None,
            &client,
            Some("unknown passkey"),
        )
        .await?;
        return Err(wrong_passkey());
    };
    let result = match state.webauthn.finish_discoverable_authentication(
        &body.credential,
        authentication,
        &[DiscoverableKey::from(&passkey)],
    ) {
        Ok(result) => result,
        Err(e) => {
            drop(tx);
            tracing::info!(user.id = %user_id, error = %e, "passkey sign-in refused");
            audit::record(
                &db,
                Kind::SignInFailed,
                Some(user_id),
                None,
                &client,
                Some("passkey"),
            )
            .await?;
            return Err(wrong_passkey());
        }
    };
    passkey.update_credential(&result);
    let updated = to_json(&passkey)?;
    tx.execute_t(
        "UPDATE auth.passkeys SET passkey = $2, last_used_at = now() WHERE id = $1",
        &[&passkey_id, &updated],
    )
    .await?;
    let user = tx
        .query_opt_t(
            &format!("SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1 AND deleted_at IS NULL"),
            &[&user_id],
        )
        .await?
        .map(|r| User::from_row(&r))
        .ok_or_else(wrong_passkey)?;
    if state.cfg.require_verified_email && !user.email_verified {
        return Err(routes::unverified_email());
    }
    let (session_id, token) = session::start(&tx, &state, &req, user.id).await?;
    tx.execute_t(
        "UPDATE auth.sessions SET passkey_id = $2 WHERE id = $1",
        &[&session_id, &passkey_id],
    )
    .await?;
    audit::record(
        &tx,
        Kind::SignedIn,
        Some(user.id),
        Some(session_id),
        &client,
        Some("passkey"),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, passkey.id = %passkey_id, "signed in with a passkey");
    routes::signed_in(&state, user, session_id, token, StatusCode::OK)
}
