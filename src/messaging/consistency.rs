//! The read-your-writes token on the wire (DESIGN.md §5): every write answers with the
//! primary's WAL LSN in the `X-Consistency-Token` header and the `ryw_lsn` cookie
//! (HttpOnly, Path=/api); reads take the newer of the two.

use std::future::{ready, Ready};

use actix_web::{
    cookie::{time::Duration as CookieDuration, Cookie, SameSite},
    dev::Payload,
    FromRequest, HttpRequest, HttpResponseBuilder,
};

use crate::{db::Lsn, error::ApiError};

/// Response and request header carrying the token.
pub const HEADER: &str = "x-consistency-token";
/// Cookie carrying the token for browsers.
pub const COOKIE: &str = "ryw_lsn";
/// The cookie outlives any sane replica lag; after that the replica has the write anyway.
const COOKIE_MAX_AGE_SECS: i64 = 300;

/// The caller's consistency token, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consistency(pub Option<Lsn>);

impl FromRequest for Consistency {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// Errors: 400 for a header that is not an LSN (`HIGH/LOW` in hex). A malformed cookie
    /// is ignored: the browser sends it without the client's say.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = match req.headers().get(HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) => match v.parse::<Lsn>() {
                Ok(l) => Some(l),
                Err(e) => {
                    return ready(Err(ApiError::BadRequest(format!(
                        "X-Consistency-Token is not a WAL LSN: {e}"
                    ))))
                }
            },
            Some(Err(_)) => {
                return ready(Err(ApiError::BadRequest(
                    "X-Consistency-Token is not a WAL LSN".into(),
                )))
            }
        };
        let cookie = req
            .cookie(COOKIE)
            .and_then(|c| c.value().parse::<Lsn>().ok());
        ready(Ok(Consistency(header.max(cookie))))
    }
}

/// Adds the token to a write's answer, as header and cookie.
pub fn attach(res: &mut HttpResponseBuilder, lsn: Lsn, secure: bool) {
    let value = lsn.to_string();
    res.insert_header((HEADER, value.clone()));
    res.cookie(
        Cookie::build(COOKIE, value)
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/api")
            .secure(secure)
            .max_age(CookieDuration::seconds(COOKIE_MAX_AGE_SECS))
            .finish(),
    );
}
