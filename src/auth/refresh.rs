//! Refresh tokens: 256-bit random values sent only in the refresh cookie
//! (`__Secure-refresh_token`, or `refresh_token` on plain-HTTP development stacks) and
//! stored only as SHA-256 hashes (DESIGN.md §2).

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};

/// Name of the refresh token cookie when cookies are not `Secure` (plain-HTTP development
/// stacks, `COOKIE_SECURE=false`).
pub const COOKIE: &str = "refresh_token";
/// Name of the refresh token cookie when cookies are `Secure` (every deployment). Browsers
/// accept a `__Secure-` cookie only when it is set with `Secure` from an HTTPS page
/// (RFC 6265bis, "The __Secure- Prefix"), so a plain-HTTP response or a page on another
/// scheme cannot plant or overwrite the session's token.
pub const SECURE_COOKIE: &str = "__Secure-refresh_token";

/// The refresh cookie's name for the `COOKIE_SECURE` setting: [`SECURE_COOKIE`] or [`COOKIE`].
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_COOKIE
    } else {
        COOKIE
    }
}
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

/// `__Secure-refresh_token=<token>; HttpOnly; SameSite=Strict; Path=/auth; Max-Age=<ttl>;
/// Secure`, or `refresh_token=…` without `Secure` when `secure` is false.
pub fn cookie(token: String, max_age_secs: i64, secure: bool) -> Cookie<'static> {
    Cookie::build(cookie_name(secure), token)
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

/// The token a refresh token is exchanged for: base64url(HMAC-SHA256(key, token)).
/// Deterministic, so a grace-window refresh (two tabs at once) hands back the very successor
/// the first refresh issued without that successor ever being stored; unpredictable without
/// the key, as the first token of a family is random.
pub fn successor(key: &[u8; 32], token: &str) -> String {
    URL_SAFE_NO_PAD.encode(crate::platform::secrets::mac(key, token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_are_deterministic_per_key_and_token() {
        let (t, h) = generate();
        assert_eq!(h, hash(&t));
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        assert_eq!(successor(&k1, &t), successor(&k1, &t));
        assert_ne!(successor(&k1, &t), successor(&k2, &t));
        assert_ne!(successor(&k1, &t), t);
        assert_eq!(successor(&k1, &t).len(), 43);
    }
}
