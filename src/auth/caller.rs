//! The authenticated caller of a bearer endpoint of the auth service. Unlike the messaging
//! service, auth also checks that the token's session is still active (it has the database
//! at hand), so a revoked session cannot manage the account for the token's remaining minutes.

use crate::platform::db::Traced;
use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use uuid::Uuid;

use super::State;
use crate::{
    platform::access::{bearer_token, verify_bearer},
    platform::error::ApiError,
};

/// A verified access token whose session and account are still active.
#[derive(Debug, Clone, Copy)]
pub struct AuthCaller {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl FromRequest for AuthCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    /// Errors: 401 for a missing or invalid token, or an ended session or deleted account.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req).map(str::to_owned);
        let state = req.app_data::<web::Data<State>>().cloned();
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
            let claims = verify_bearer(&state.verifier, token).await?;
            let db = state.db.get().await?;
            let active = db
                .query_opt_t(
                    "SELECT 1 FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
                     WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL
                       AND u.deleted_at IS NULL",
                    &[&claims.sid, &claims.sub],
                )
                .await?;
            if active.is_none() {
                return Err(ApiError::bearer("session has ended"));
            }
            Ok(AuthCaller {
                user_id: claims.sub,
                session_id: claims.sid,
            })
        })
    }
}
