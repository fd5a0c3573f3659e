//! The single-use links mailed to prove an address or reset a password: 256 random bits
//! (base64url, 43 characters) in the link, only their SHA-256 hash stored
//! (`auth.email_tokens`), valid until `expires_at`, spent by the first use.

use std::time::Duration;

use uuid::Uuid;

use crate::platform::db::Traced;

use super::refresh;

/// What a link is for (the `purpose` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proves `email` belongs to the account (at sign-up, or a new address before it
    /// replaces the old one).
    VerifyEmail,
    /// Sets a new password.
    PasswordReset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
        }
    }
}

/// Creates a link for `user_id` sent to `email`, valid for `ttl`; returns the token to put
/// in it (never stored).
///
/// Errors: the insert fails.
pub async fn issue(
    tx: &impl Traced,
    user_id: Uuid,
    purpose: Purpose,
    email: &str,
    ttl: Duration,
) -> Result<String, tokio_postgres::Error> {
    let (token, hash) = refresh::generate();
    tx.execute_t(
        "INSERT INTO auth.email_tokens (token_hash, user_id, purpose, email, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        &[
            &hash,
            &user_id,
            &purpose.as_str(),
            &email,
            &ttl.as_secs_f64(),
        ],
    )
    .await?;
    Ok(token)
}

/// Spends a link: `Some((user_id, email))` when `token` is one of `purpose`'s, unused and
/// unexpired, for an account that still exists; it cannot be used again. `None` for every
/// other case alike (unknown, used, expired, another purpose), so an answer never says which.
///
/// Errors: the update fails.
pub async fn consume(
    tx: &impl Traced,
    token: &str,
    purpose: Purpose,
) -> Result<Option<(Uuid, String)>, tokio_postgres::Error> {
    let row = tx
        .query_opt_t(
            "UPDATE auth.email_tokens t SET used_at = now()
             FROM auth.users u
             WHERE t.token_hash = $1 AND t.purpose = $2 AND t.used_at IS NULL
               AND t.expires_at > now() AND u.id = t.user_id AND u.deleted_at IS NULL
             RETURNING t.user_id, t.email",
            &[&refresh::hash(token.trim()), &purpose.as_str()],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Spends every other unused link of `user_id` for `purpose` (a reset that worked voids the
/// other reset links; a verified address voids older verification links).
///
/// Errors: the update fails.
pub async fn void_others(
    tx: &impl Traced,
    user_id: Uuid,
    purpose: Purpose,
) -> Result<(), tokio_postgres::Error> {
    tx.execute_t(
        "UPDATE auth.email_tokens SET used_at = now()
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        &[&user_id, &purpose.as_str()],
    )
    .await?;
    Ok(())
}

/// Spends every unused link of `user_id`, whatever its purpose: after a password reset or
/// change, a link mailed before (perhaps to an address an intruder added) must not work.
///
/// Errors: the update fails.
pub async fn void_all(tx: &impl Traced, user_id: Uuid) -> Result<(), tokio_postgres::Error> {
    tx.execute_t(
        "UPDATE auth.email_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        &[&user_id],
    )
    .await?;
    Ok(())
}

/// Links of `purpose` made for `user_id` in the last hour (the per-account mail budget).
///
/// Errors: the query fails.
pub async fn issued_last_hour(
    db: &impl Traced,
    user_id: Uuid,
    purpose: Purpose,
) -> Result<i64, tokio_postgres::Error> {
    let row = db
        .query_one_t(
            "SELECT count(*) FROM auth.email_tokens
             WHERE user_id = $1 AND purpose = $2 AND created_at > now() - interval '1 hour'",
            &[&user_id, &purpose.as_str()],
        )
        .await?;
    Ok(row.get(0))
}
