//! The auth service (DESIGN.md §2–3): accounts, sessions with rotating refresh tokens in an
//! HttpOnly cookie, and Ed25519 access tokens published through a JWKS.

pub mod keys;
pub mod password;
pub mod refresh;
pub mod routes;
pub mod validate;

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::config::AuthConfig;

/// Shared state of the auth service's handlers.
pub struct AuthState {
    /// The primary: every auth read must be fresh (tokens, credentials), so auth has no replica.
    pub db: Pool,
    pub keys: keys::SigningKeys,
    pub cfg: AuthConfig,
}

/// `web::Data` payload type.
pub type State = Arc<AuthState>;
