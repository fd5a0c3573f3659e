//! The read-your-writes token on the wire (DESIGN.md §5): every write answers with the
//! primary's WAL LSN after commit, signed ([`sign`]: `<LSN>.<MAC>` with the
//! `CONSISTENCY_TOKEN_SECRET` key ring), in the `X-Consistency-Token` header and the `ryw_lsn`
//! cookie (HttpOnly, Path=/api); reads take the newer of the two. A token that is not one we
//! signed is refused (header) or ignored (cookie), so nobody can make their reads wait for a
//! WAL position that does not exist.

use std::future::{ready, Ready};

use actix_web::{
    cookie::{time::Duration as CookieDuration, Cookie, SameSite},
    dev::Payload,
    web, FromRequest, HttpRequest, HttpResponseBuilder,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::State;
use crate::platform::{
    db::{Conn, Lsn},
    error::ApiError,
    secrets::KeyRing,
};

/// Response and request header carrying the token.
pub const HEADER: &str = "x-consistency-token";
/// Cookie carrying the token for browsers.
pub const COOKIE: &str = "ryw_lsn";
/// The cookie outlives any sane replica lag; after that the replica has the write anyway.
const COOKIE_MAX_AGE_SECS: i64 = 300;

/// The caller's verified consistency token, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consistency(pub Option<Lsn>);

impl FromRequest for Consistency {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// Errors: 400 for a header that is not a token this service signed. A bad cookie is
    /// ignored: the browser sends it without the client's say.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<State>>() else {
            return ready(Ok(Consistency(None)));
        };
        let header = match req.headers().get(HEADER) {
            None => None,
            Some(v) => match v
                .to_str()
                .ok()
                .and_then(|t| verify(&state.cfg.consistency_keys, t))
            {
                Some(l) => Some(l),
                None => {
                    return ready(Err(ApiError::BadRequest(
                        "X-Consistency-Token is not a token this service issued".into(),
                    )))
                }
            },
        };
        let cookie = req
            .cookie(COOKIE)
            .and_then(|c| verify(&state.cfg.consistency_keys, c.value()));
        ready(Ok(Consistency(header.max(cookie))))
    }
}

/// The answer to a committed write: `status` with the signed token of the primary's WAL
/// position now (read on `conn`, after the commit), as header and cookie.
///
/// Errors: the position cannot be read (503 when the primary went away).
pub async fn written(
    state: &State,
    conn: &Conn,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponseBuilder, ApiError> {
    let lsn = crate::platform::db::current_lsn(conn).await?;
    let mut res = actix_web::HttpResponse::build(status);
    attach(state, &mut res, lsn);
    Ok(res)
}

/// Adds the signed token to a write's answer, as header and cookie.
pub fn attach(state: &State, res: &mut HttpResponseBuilder, lsn: Lsn) {
    let value = sign(&state.cfg.consistency_keys, lsn);
    res.insert_header((HEADER, value.clone()));
    res.cookie(
        Cookie::build(COOKIE, value)
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/api")
            .secure(state.cfg.web.cookie_secure)
            .max_age(CookieDuration::seconds(COOKIE_MAX_AGE_SECS))
            .finish(),
    );
}

/// The signed form of a token: `<LSN>.<base64url of the first 16 bytes of
/// HMAC-SHA256(signing key, LSN)>` (a left-truncated MAC, RFC 2104 §5).
pub fn sign(keys: &KeyRing, lsn: Lsn) -> String {
    let text = lsn.to_string();
    let tag = keys.sign(text.as_bytes());
    format!("{text}.{}", URL_SAFE_NO_PAD.encode(&tag[..16]))
}

/// The LSN of a token signed with any of `keys` (so tokens stay valid across a key
/// rotation); `None` for anything else. Compared in constant time.
pub fn verify(keys: &KeyRing, token: &str) -> Option<Lsn> {
    let (text, mac) = token.trim().rsplit_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(mac).ok()?;
    if tag.len() != 16 || !keys.verify(text.as_bytes(), &tag) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&str]) -> KeyRing {
        KeyRing::from_secrets(secrets)
    }

    #[test]
    fn tokens_verify_only_when_signed_by_us() {
        let keys = ring(&["0123456789abcdef"]);
        let t = sign(&keys, Lsn::from(0x16_B374_D848));
        assert_eq!(verify(&keys, &t), Some(Lsn::from(0x16_B374_D848)));
        assert!(verify(&keys, "16/B374D848").is_none());
        assert!(verify(&keys, "FFFFFFFF/FFFFFFFF.AAAAAAAAAAAAAAAAAAAAAA").is_none());
        let forged = t.replace("16/", "17/");
        assert!(verify(&keys, &forged).is_none());
    }

    #[test]
    fn tokens_survive_a_key_rotation() {
        let (old, rotated) = (ring(&["old-key"]), ring(&["new-key", "old-key"]));
        let t = sign(&old, Lsn::from(42));
        assert_eq!(
            verify(&rotated, &t),
            Some(Lsn::from(42)),
            "old tokens verify"
        );
        assert_eq!(
            verify(&old, &sign(&rotated, Lsn::from(7))),
            None,
            "new key signs"
        );
        assert_eq!(verify(&ring(&["new-key"]), &t), None, "retired key");
    }
}
