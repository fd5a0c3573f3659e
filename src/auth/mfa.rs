//! Sign-in in two steps when the account has TOTP on: the password answers 202 with a
//! challenge (256 random bits, valid [`CHALLENGE_TTL`], stored only hashed), which
//! `POST /auth/login/mfa` answers with a TOTP code or a recovery code. A challenge takes
//! [`CHALLENGE_ATTEMPTS`] wrong codes, then dies; a replayed TOTP code or a used recovery
//! code is wrong. Recovery codes: 10 per enrolment, 50 random bits each, stored as SHA-256.

use std::time::Duration;

use actix_web::{
    http::StatusCode,
    web::{self, Json},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    attempts,
    audit::{self, Kind},
    refresh, routes, session, totp,
    user::{User, USER_COLUMNS},
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// How long a challenge waits for its code.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Wrong codes a challenge takes before it dies.
pub const CHALLENGE_ATTEMPTS: i32 = 5;
/// Recovery codes per enrolment.
const RECOVERY_CODES: usize = 10;

/// A recovery code as stored: SHA-256 of its canonical form (lower case, no separators).
fn code_hash(code: &str) -> Vec<u8> {
    let canonical: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Sha256::digest(canonical.as_bytes()).to_vec()
}

/// Replaces `user_id`'s recovery codes with 10 new ones; returns them as shown
/// (`xxxxx-xxxxx`, base32 lower case: 50 bits each).
///
/// Errors: database failures.
pub async fn new_recovery_codes(tx: &impl Traced, user_id: Uuid) -> Result<Vec<String>, ApiError> {
    tx.execute_t(
        "DELETE FROM auth.recovery_codes WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let raw: [u8; 10] = rand::random();
        let chars: String = raw
            .iter()
            .map(|b| ALPHABET[usize::from(b % 32)] as char)
            .collect();
        let code = format!("{}-{}", &chars[..5], &chars[5..]);
        tx.execute_t(
            "INSERT INTO auth.recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            &[&user_id, &code_hash(&code)],
        )
        .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// Spends one of `user_id`'s recovery codes; `false` if `code` is none of the unused ones.
///
/// Errors: database failures.
pub async fn use_recovery_code(
    tx: &impl Traced,
    user_id: Uuid,
    code: &str,
) -> Result<bool, ApiError> {
    let used = tx
        .execute_t(
            "UPDATE auth.recovery_codes SET used_at = now()
             WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            &[&user_id, &code_hash(code)],
        )
        .await?;
    Ok(used == 1)
}

/// Ends every open challenge of `user_id` (after a password reset or change: a sign-in
/// half-done with the old password must not finish).
///
/// Errors: database failures.
pub async fn void_challenges(tx: &impl Traced, user_id: Uuid) -> Result<(), ApiError> {
    tx.execute_t(
        "UPDATE auth.mfa_challenges SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// The first step's answer when a second factor is needed (202, no tokens, no cookie).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Challenge {
    /// Always true: send a code to `POST /auth/login/mfa` with `challenge`.
    pub mfa_required: bool,
    /// Opaque, single-use; valid `expires_in` seconds.
    pub challenge: String,
    pub expires_in: u64,
    /// What may answer it: `totp`, `recovery_code`.
    pub methods: Vec<&'static str>,
}

/// Starts the second step for `user_id` (the password checked out): 202 with a challenge.
///
/// Errors: database failures.
pub async fn challenge(tx: &impl Traced, user_id: Uuid) -> Result<HttpResponse, ApiError> {
    let (token, hash) = refresh::generate();
    tx.execute_t(
        "INSERT INTO auth.mfa_challenges (token_hash, user_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))",
        &[&hash, &user_id, &CHALLENGE_TTL.as_secs_f64()],
    )
    .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Cache-Control", "no-store"))
        .json(Challenge {
            mfa_required: true,
            challenge: token,
            expires_in: CHALLENGE_TTL.as_secs(),
            methods: vec!["totp", "recovery_code"],
        }))
}

/// `POST /auth/login/mfa` body: the challenge and one of the codes.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct MfaAnswer {
    #[schema(max_length = 128)]
    pub challenge: String,
    /// 6 digits from the authenticator.
    #[schema(max_length = 16)]
    pub code: Option<String>,
    /// One of the recovery codes, instead of `code`.
    #[schema(max_length = 32)]
    pub recovery_code: Option<String>,
}

/// `POST /auth/login/mfa` `{challenge, code | recovery_code}`: the second step of a sign-in.
/// 200 with tokens and the refresh cookie, as `POST /auth/login`. 401 for a wrong, stale or
/// replayed code, a used recovery code, or a challenge that is unknown, expired, used, or
/// past its 5 wrong codes (then sign in again); 422 without exactly one of the codes.
#[utoipa::path(post, path = "/auth/login/mfa", tag = "auth", request_body = MfaAnswer, security(()),
    responses((status = 200, description = "Signed in: a new session.", body = routes::TokenResponse)))]
pub async fn answer(
    state: web::Data<State>,
    req: HttpRequest,
    body: Json<MfaAnswer>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (code, recovery) = match (&body.code, &body.recovery_code) {
        (Some(c), None) => (Some(c.as_str()), None),
        (None, Some(r)) => (None, Some(r.as_str())),
        _ => {
            let detail = "give exactly one of code and recovery_code";
            let mut errors = crate::platform::error::FieldErrors::new();
            errors.insert("code".into(), vec![detail.into()]);
            return Err(ApiError::Unprocessable {
                detail: detail.into(),
                errors,
            });
        }
    };
    let challenge_hash = refresh::hash(body.challenge.trim());
    let mut db = state.db.get().await?;
    // The attempt counts whatever its outcome (its own transaction, committed first).
    let row = db
        .query_opt_t(
            "UPDATE auth.mfa_challenges SET attempts = attempts + 1
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() AND attempts < $2
             RETURNING user_id",
            &[&challenge_hash, &CHALLENGE_ATTEMPTS],
        )
        .await?;
    let Some(row) = row else {
        return Err(ApiError::unauthorized(
            "this sign-in expired or took too many wrong codes; sign in again",
        ));
    };
    let user_id: Uuid = row.get(0);
    // Counted per account too, before the code is checked: 5 codes per 15 minutes across
    // all challenges (LOGIN_MAX_FAILURES, LOGIN_FAILURE_WINDOW_SECS), then 429.
    let second_factor = attempts::Key::SecondFactor(user_id);
    attempts::begin(&db, &state, &second_factor).await?;
    let client = audit::Client::of(&req);
    let tx = db.transaction().await?;
    let proven = match (code, recovery) {
        (Some(code), _) => totp::accept_code(&tx, user_id, code, true).await?,
        (_, Some(recovery)) => use_recovery_code(&tx, user_id, recovery).await?,
        _ => false,
    };
    if !proven {
        drop(tx);
        audit::record(
            &db,
            Kind::SecondFactorFailed,
            Some(user_id),
            None,
            &client,
            None,
        )
        .await?;
        return Err(ApiError::unauthorized(
            "that code is wrong, stale or used already",
        ));
    }
    let spent = tx
        .execute_t(
            "UPDATE auth.mfa_challenges SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL",
            &[&challenge_hash],
        )
        .await?;
    if spent != 1 {
        // Another answer to the same challenge won the race.
        return Err(ApiError::unauthorized(
            "this sign-in was completed already; sign in again",
        ));
    }
    attempts::succeeded(&tx, &second_factor).await?;
    let user = tx
        .query_opt_t(
            &format!("SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1 AND deleted_at IS NULL"),
            &[&user_id],
        )
        .await?
        .map(|r| User::from_row(&r))
        .ok_or_else(|| ApiError::unauthorized("this sign-in expired; sign in again"))?;
    let (session_id, token) = session::start(&tx, &state, &req, user.id).await?;
    if recovery.is_some() {
        audit::record(
            &tx,
            Kind::RecoveryCodeUsed,
            Some(user.id),
            Some(session_id),
            &client,
            None,
        )
        .await?;
    }
    let how = if recovery.is_some() {
        "recovery code"
    } else {
        "totp"
    };
    audit::record(
        &tx,
        Kind::SignedIn,
        Some(user.id),
        Some(session_id),
        &client,
        Some(how),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, recovery = recovery.is_some(), "signed in with a second factor");
    routes::signed_in(&state, user, session_id, token, StatusCode::OK)
}
