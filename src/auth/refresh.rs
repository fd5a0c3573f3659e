//! Refresh tokens: 256-bit random values sent only in the `refresh_token` cookie and stored
//! only as SHA-256 hashes (DESIGN.md §2).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};

/// Name of the refresh token cookie.
pub const COOKIE: &str = "refresh_token";
/// The cookie's path: only the auth endpoints ever see it.
pub const COOKIE_PATH: &str = "/auth";

/// A new token (43 base64url characters) and its hash.
pub fn generate() -> (String, Vec<u8>) {
    let bytes: [u8; 32] = rand::random();
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

/// SHA-256 of the token's text: the only form stored.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// `refresh_token=<token>; HttpOnly; SameSite=Strict; Path=/auth; Max-Age=<ttl>[; Secure]`.
pub fn cookie(token: String, max_age_secs: i64, secure: bool) -> Cookie<'static> {
    Cookie::build(COOKIE, token)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(COOKIE_PATH)
        .secure(secure)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// The same cookie emptied with `Max-Age=0`, which makes the browser delete it.
pub fn clear_cookie(secure: bool) -> Cookie<'static> {
    cookie(String::new(), 0, secure)
}
