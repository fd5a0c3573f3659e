//! Password attempts (issue 14): every endpoint that checks a password counts the attempt
//! *before* bcrypt runs, atomically (one upsert, serialised on the key's row), so concurrent
//! guesses cannot all slip past the limit; the count is keyed on the account, so its
//! username and email share it, or — for a login name no account has — on that name, so a
//! lockout looks the same whether or not the account exists.
//!
//! `LOGIN_MAX_FAILURES` attempts within `LOGIN_FAILURE_WINDOW_SECS` go through; the next one
//! locks the key for `LOGIN_LOCKOUT_SECS` (429 with `Retry-After`). A correct password
//! clears the count.
//!
//! A sign-in counts against the login name as typed *and* against the account it names: the
//! name's lock answers 429 (the same for every name, registered or not); an account locked
//! through one of its names answers a sign-in by its other name like a wrong password (401,
//! after a dummy bcrypt), so locking an account by its username never tells which email
//! address it has.

use crate::platform::db::Traced;
use uuid::Uuid;

use super::State;
use crate::platform::error::ApiError;

/// What attempts are counted against.
#[derive(Debug, Clone)]
pub enum Key {
    /// An existing account, however it was named.
    Account(Uuid),
    /// A login name (lower-cased) that no account has.
    Login(String),
    /// Second-factor codes for an account (TOTP or recovery codes), counted across every
    /// challenge: a right password does not clear it, so new challenges give no new guesses.
    SecondFactor(Uuid),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Self::Account(id) => format!("user:{id}"),
            Self::Login(name) => format!("login:{name}"),
            Self::SecondFactor(id) => format!("mfa:{id}"),
        }
    }
}

/// Counts one password attempt against `key`; returns the seconds it stays locked, if it
/// is locked (this attempt included once the window's allowance is spent).
///
/// Errors: database failures.
pub async fn count(db: &impl Traced, state: &State, key: &Key) -> Result<Option<u32>, ApiError> {
    // A window or lock that has passed starts over at this attempt.
    let row = db
        .query_one_t(
            "INSERT INTO auth.password_attempts AS a (key, attempts, window_start)
             VALUES ($1, 1, now())
             ON CONFLICT (key) DO UPDATE SET
                 attempts = CASE WHEN a.locked_until <= now()
                                   OR (a.locked_until IS NULL
                                       AND a.window_start < now() - make_interval(secs => $2))
                                 THEN 1 ELSE a.attempts + 1 END,
                 window_start = CASE WHEN a.locked_until <= now()
                                       OR (a.locked_until IS NULL
                                           AND a.window_start < now() - make_interval(secs => $2))
                                     THEN now() ELSE a.window_start END,
                 locked_until = CASE WHEN a.locked_until > now() THEN a.locked_until
                                     WHEN a.locked_until IS NULL
                                          AND a.window_start >= now() - make_interval(secs => $2)
                                          AND a.attempts + 1 > $3
                                     THEN now() + make_interval(secs => $4) END
             RETURNING EXTRACT(EPOCH FROM locked_until - now())::float8",
            &[
                &key.text(),
                &state.cfg.login_failure_window.as_secs_f64(),
                &state.cfg.login_max_failures,
                &state.cfg.login_lockout.as_secs_f64(),
            ],
        )
        .await?;
    Ok(row
        .get::<_, Option<f64>>(0)
        .filter(|secs| *secs > 0.0)
        .map(|secs| secs.ceil().max(1.0) as u32))
}

/// The 429 for a locked key.
pub fn locked(retry_after: u32) -> ApiError {
    tracing::warn!("password attempts locked");
    ApiError::TooManyRequests {
        detail: "too many password attempts; try again later".into(),
        retry_after,
    }
}

/// Counts one password attempt of a signed-in user against their account.
///
/// Errors: 429 with `Retry-After` while the account is locked; database failures.
pub async fn begin(db: &impl Traced, state: &State, key: &Key) -> Result<(), ApiError> {
    match count(db, state, key).await? {
        Some(secs) => Err(locked(secs)),
        None => Ok(()),
    }
}

/// Clears `key`'s count after a correct password.
///
/// Errors: database failures.
pub async fn succeeded(db: &impl Traced, key: &Key) -> Result<(), ApiError> {
    db.execute_t(
        "DELETE FROM auth.password_attempts WHERE key = $1",
        &[&key.text()],
    )
    .await?;
    Ok(())
}
