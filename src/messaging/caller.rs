//! The authenticated caller of a messaging endpoint, from `Authorization: Bearer <access token>`.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use uuid::Uuid;

use super::State;
use crate::{
    platform::access::{bearer_token, verify_bearer},
    platform::error::ApiError,
};

/// A verified access token's user and session, and when the token expires.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The token's `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    /// Errors: 401 with `WWW-Authenticate: Bearer` when the header is missing, the token
    /// does not verify (see [`crate::platform::access::Verifier::verify`]), its session ended
    /// recently, or it lives longer than ended sessions are remembered
    /// ([`super::ended_sessions`]).
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req).map(str::to_owned);
        let state = req.app_data::<web::Data<State>>().cloned();
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
            let claims = verify_bearer(&state.verifier, token).await?;
            if state.ended.contains(claims.sid) {
                return Err(ApiError::bearer("session has ended"));
            }
            if !state.ended.covers(claims.iat, claims.exp) {
                return Err(ApiError::bearer(
                    "access token lives longer than this service remembers ended sessions \
                     (SESSION_END_MEMORY_SECS)",
                ));
            }
            Ok(Caller {
                user_id: claims.sub,
                session_id: claims.sid,
                expires_at: claims.exp,
            })
        })
    }
}
