//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP: HMAC-SHA1, 6 digits,
//! 30-second steps, one step of clock skew either way) and the enrolment endpoints: start
//! (a secret, its `otpauth://` URI and a QR code), confirm with a first code (then 10
//! recovery codes), disable with a fresh code. A code is accepted once: each acceptance
//! moves the account's `last_step` forward, and a code of that step or an older one is a
//! replay (RFC 6238 §5.2).

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{
    web::{self, Json},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

use super::{
    attempts,
    audit::{self, Kind},
    caller::AuthCaller,
    mfa, State,
};
use crate::platform::{db::Traced, error::ApiError};

/// Seconds per step (RFC 6238's default X).
const STEP: u64 = 30;
/// Digits per code.
const DIGITS: usize = 6;
/// Shown by authenticator apps beside the account name.
const ISSUER: &str = "Switchboard";

fn totp(secret: Vec<u8>, account: &str) -> Result<TOTP, ApiError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP,
        secret,
        Some(ISSUER.into()),
        account.to_owned(),
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("TOTP parameters: {e}")))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The time step `code` was made for, within one step of now, or `None`. Compared in
/// constant time per candidate.
fn matching_step(totp: &TOTP, code: &str, now: u64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP;
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .find(|step| {
            let expected = totp.generate(step * STEP);
            constant_time_eq(expected.as_bytes(), code.as_bytes())
        })
        .and_then(|step| i64::try_from(step).ok())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `code` against `user_id`'s authenticator (`confirmed`: only a confirmed one) and,
/// if it matches a step newer than the last accepted, records that step — in `tx`, so a
/// concurrent use of the same code finds it spent. `false` for a wrong, stale or replayed
/// code, or no authenticator.
///
/// Errors: database failures.
pub async fn accept_code(
    tx: &impl Traced,
    user_id: Uuid,
    code: &str,
    confirmed: bool,
) -> Result<bool, ApiError> {
    let Some(row) = tx
        .query_opt_t(
            "SELECT secret, u.username FROM auth.totp t JOIN auth.users u ON u.id = t.user_id
             WHERE t.user_id = $1 AND (t.confirmed_at IS NOT NULL) = $2 FOR UPDATE OF t",
            &[&user_id, &confirmed],
        )
        .await?
    else {
        return Ok(false);
    };
    let totp = totp(row.get(0), row.get::<_, &str>(1))?;
    let Some(step) = matching_step(&totp, code, now_secs()) else {
        return Ok(false);
    };
    let moved = tx
        .execute_t(
            "UPDATE auth.totp SET last_step = $2 WHERE user_id = $1 AND last_step < $2",
            &[&user_id, &step],
        )
        .await?;
    Ok(moved == 1)
}

/// Whether `user_id` signs in with a second factor.
///
/// Errors: database failures.
pub async fn enabled(db: &impl Traced, user_id: Uuid) -> Result<bool, ApiError> {
    Ok(db
        .query_opt_t(
            "SELECT 1 FROM auth.totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
            &[&user_id],
        )
        .await?
        .is_some())
}

/// `GET /auth/me/totp` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Whether sign-in asks for a code after the password.
    pub enabled: bool,
    /// When it was turned on; null when off.
    pub enabled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Unused recovery codes (0 when off).
    pub recovery_codes_left: i64,
}

/// `GET /auth/me/totp`: whether two-factor sign-in is on, and how many recovery codes are
/// left. 200.
#[utoipa::path(get, path = "/auth/me/totp", tag = "account", operation_id = "two_factor_status",
    responses((status = 200, description = "Two-factor sign-in's state.", body = Status)))]
pub async fn status(state: web::Data<State>, caller: AuthCaller) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    let row = db
        .query_one_t(
            "SELECT (SELECT confirmed_at FROM auth.totp WHERE user_id = $1),
                    (SELECT count(*) FROM auth.recovery_codes WHERE user_id = $1 AND used_at IS NULL)",
            &[&caller.user_id],
        )
        .await?;
    let enabled_at: Option<chrono::DateTime<chrono::Utc>> = row.get(0);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Status {
            enabled: enabled_at.is_some(),
            enabled_at,
            recovery_codes_left: row.get(1),
        }))
}

/// `POST /auth/me/totp` answer: what an authenticator app needs. Shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// The shared secret, base32 (RFC 4648), for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/Switchboard:<username>?secret=…&issuer=Switchboard&…`.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// `POST /auth/me/totp` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct StartEnrolment {
    /// The account's password: an authenticator set up by whoever holds a stolen token
    /// would lock the owner out of their account.
    #[schema(max_length = 1024)]
    pub password: String,
}

/// `POST /auth/me/totp` `{password}`: starts (or restarts) enrolment with a new 160-bit
/// secret. 200 with the secret, its `otpauth://` URI and a QR code; the authenticator counts
/// only once confirmed with a first code. 403 for a wrong password (429 past the account's
/// password attempts); 409 when two-factor sign-in is on already.
#[utoipa::path(post, path = "/auth/me/totp", tag = "account", request_body = StartEnrolment,
    responses((status = 200, description = "A new secret to add to an authenticator app; confirm it with a first code.", body = Enrolment)))]
pub async fn start(
    state: web::Data<State>,
    caller: AuthCaller,
    body: Json<StartEnrolment>,
) -> Result<HttpResponse, ApiError> {
    let db = state.db.get().await?;
    super::account::confirm_password(&state, &db, caller.user_id, body.into_inner().password)
        .await?;
    if enabled(&db, caller.user_id).await? {
        return Err(ApiError::Conflict(
            "two-factor sign-in is on already; disable it first".into(),
        ));
    }
    let username: String = db
        .query_one_t(
            "SELECT username FROM auth.users WHERE id = $1",
            &[&caller.user_id],
        )
        .await?
        .get(0);
    let secret: [u8; 20] = rand::random();
    let stored = db
        .execute_t(
            "INSERT INTO auth.totp (user_id, secret) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET secret = $2, created_at = now(), last_step = 0
             WHERE auth.totp.confirmed_at IS NULL",
            &[&caller.user_id, &secret.as_slice()],
        )
        .await?;
    if stored != 1 {
        // Confirmed meanwhile (a concurrent confirm won).
        return Err(ApiError::Conflict(
            "two-factor sign-in is on already; disable it first".into(),
        ));
    }
    let totp = totp(secret.to_vec(), &username)?;
    let otpauth_uri = totp.get_url();
    let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("QR code: {e}")))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Enrolment {
            secret: totp.get_secret_base32(),
            otpauth_uri,
            qr_svg,
        }))
}

/// A code from the authenticator app.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Code {
    /// 6 digits (or, to disable, one of the recovery codes).
    #[schema(max_length = 32)]
    pub code: String,
}

/// `POST /auth/me/totp/confirm` answer: the recovery codes, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// 10 single-use codes (`xxxxx-xxxxx`), each signs in once in place of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// `POST /auth/me/totp/confirm` `{code}`: proves the enrolment with a first code; two-factor
/// sign-in is on from now. 200 with 10 recovery codes (stored only hashed, shown once). 400
/// for a wrong, stale or replayed code, or no enrolment started.
#[utoipa::path(post, path = "/auth/me/totp/confirm", tag = "account", request_body = Code,
    responses((status = 200, description = "Two-factor sign-in is on.", body = RecoveryCodes)))]
pub async fn confirm(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    body: Json<Code>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    attempts::begin(&db, &state, &attempts::Key::SecondFactor(caller.user_id)).await?;
    let tx = db.transaction().await?;
    if !accept_code(&tx, caller.user_id, &body.code, false).await? {
        return Err(ApiError::BadRequest(
            "that code does not match the authenticator being set up (or was used already)".into(),
        ));
    }
    tx.execute_t(
        "UPDATE auth.totp SET confirmed_at = now() WHERE user_id = $1",
        &[&caller.user_id],
    )
    .await?;
    attempts::succeeded(&tx, &attempts::Key::SecondFactor(caller.user_id)).await?;
    let recovery_codes = mfa::new_recovery_codes(&tx, caller.user_id).await?;
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::TwoFactorEnabled,
        Some(caller.user_id),
        Some(caller.session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, "two-factor sign-in enabled");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(RecoveryCodes { recovery_codes }))
}

/// `DELETE /auth/me/totp` `{code}`: turns two-factor sign-in off, with a fresh code from the
/// authenticator (or a recovery code). 204; the secret and the recovery codes are deleted.
/// 403 for a wrong, stale or replayed code; 404 when it is not on.
#[utoipa::path(delete, path = "/auth/me/totp", tag = "account", request_body = Code,
    responses((status = 204, description = "Two-factor sign-in is off.")))]
pub async fn disable(
    state: web::Data<State>,
    req: HttpRequest,
    caller: AuthCaller,
    body: Json<Code>,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.db.get().await?;
    if !enabled(&db, caller.user_id).await? {
        return Err(ApiError::NotFound("two-factor sign-in is not on".into()));
    }
    attempts::begin(&db, &state, &attempts::Key::SecondFactor(caller.user_id)).await?;
    let tx = db.transaction().await?;
    let proven = accept_code(&tx, caller.user_id, &body.code, true).await?
        || mfa::use_recovery_code(&tx, caller.user_id, &body.code).await?;
    if !proven {
        return Err(ApiError::Forbidden(
            "that code is wrong, stale or used already".into(),
        ));
    }
    tx.execute_t(
        "DELETE FROM auth.totp WHERE user_id = $1",
        &[&caller.user_id],
    )
    .await?;
    attempts::succeeded(&tx, &attempts::Key::SecondFactor(caller.user_id)).await?;
    tx.execute_t(
        "DELETE FROM auth.recovery_codes WHERE user_id = $1",
        &[&caller.user_id],
    )
    .await?;
    let client = audit::Client::of(&req);
    audit::record(
        &tx,
        Kind::TwoFactorDisabled,
        Some(caller.user_id),
        Some(caller.session_id),
        &client,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %caller.user_id, "two-factor sign-in disabled");
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors_and_one_step_of_skew() {
        // RFC 6238 Appendix B, SHA-1, secret "12345678901234567890" (8 digits there; the
        // last 6 of each are what 6 digits give).
        let t = TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            30,
            b"12345678901234567890".to_vec(),
            None,
            "x".into(),
        )
        .expect("totp");
        assert_eq!(t.generate(59), "287082");
        assert_eq!(t.generate(1_111_111_109), "081804");
        assert_eq!(matching_step(&t, "287082", 59), Some(1));
        assert_eq!(
            matching_step(&t, "287082", 59 + 30),
            Some(1),
            "one step late"
        );
        assert_eq!(matching_step(&t, "287082", 59 + 60), None, "two steps late");
        assert_eq!(matching_step(&t, "28708", 59), None);
        assert_eq!(matching_step(&t, "abcdef", 59), None);
    }
}
