//! Password hashing with bcrypt, off the async executor.
//!
//! bcrypt reads at most 72 bytes of a password; longer ones are rejected with a 422 rather
//! than silently truncated (DESIGN.md §2). Login verifies against a fixed dummy hash when the
//! account does not exist, so an unknown user and a wrong password cost the same time.

use std::sync::OnceLock;

use crate::platform::error::{ApiError, FieldErrors};

/// Longest password bcrypt uses in full, in bytes of UTF-8.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Adds field errors for `password` under `field` (length in bytes and characters).
pub fn validate(field: &str, password: &str, errors: &mut FieldErrors) {
    let mut add = |m: String| errors.entry(field.to_owned()).or_default().push(m);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        add(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        add(format!(
            "must be at most {MAX_PASSWORD_BYTES} bytes of UTF-8 (bcrypt's limit)"
        ));
    }
    if password.contains('\0') {
        add("must not contain NUL".into());
    }
}

/// Hashes on the blocking pool.
///
/// Errors: 500 if bcrypt fails (it only does for out-of-range costs).
pub async fn hash(password: String, cost: u32) -> Result<String, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        bcrypt::hash(password.as_bytes(), cost)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Verifies on the blocking pool. With `hash = None` (no such account) it verifies against a
/// dummy hash of the same cost and returns false, taking the same time.
///
/// Errors: 500 if the blocking task fails.
pub async fn verify(password: String, hash: Option<String>, cost: u32) -> Result<bool, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        let (stored, real) = match hash {
            Some(h) => (h, true),
            None => (dummy_hash(cost).to_owned(), false),
        };
        // A password over 72 bytes can never match: every stored hash came from one within it.
        if password.len() > MAX_PASSWORD_BYTES {
            let _ = bcrypt::verify(b"", &stored);
            return false;
        }
        bcrypt::verify(password.as_bytes(), &stored).unwrap_or(false) && real
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

fn dummy_hash(cost: u32) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash(b"switchboard-dummy-password", cost).unwrap_or_default())
}
