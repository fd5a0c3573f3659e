//! The auth service (DESIGN.md §2–3): accounts, sessions with rotating refresh tokens in an
//! HttpOnly cookie, and Ed25519 access tokens published through a JWKS.
//!
//! - [`routes`]: register, login, refresh, logout, JWKS, health;
//! - [`sessions`]: list and revoke one's sessions;
//! - [`account`]: the caller's profile, password and deletion; public profiles and search;
//! - [`session`]: starting and ending sessions (ends are announced to messaging);
//! - [`keys`], [`refresh`], [`password`], [`validate`], [`caller`]: the pieces.

pub mod account;
pub mod caller;
pub mod keys;
pub mod password;
pub mod refresh;
pub mod routes;
pub mod session;
pub mod sessions;
pub mod validate;

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::{access::Verifier, config::AuthConfig};

/// Shared state of the auth service's handlers.
pub struct AuthState {
    /// The primary: every auth read must be fresh (tokens, credentials), so auth has no replica.
    pub db: Pool,
    pub keys: keys::SigningKeys,
    /// Verifies this service's own access tokens (bearer endpoints under `/auth`).
    pub verifier: Arc<Verifier>,
    /// Derives refresh token successors ([`refresh::successor`]).
    pub refresh_key: [u8; 32],
    pub cfg: AuthConfig,
}

/// `web::Data` payload type.
pub type State = Arc<AuthState>;

impl AuthState {
    /// Builds the state; the refresh key comes from `REFRESH_TOKEN_SECRET` or, without one,
    /// from the active signing key.
    pub fn new(db: Pool, keys: keys::SigningKeys, cfg: AuthConfig) -> Self {
        use sha2::{Digest, Sha256};
        let refresh_key = match &cfg.refresh_secret {
            Some(secret) => Sha256::digest(secret.as_bytes()).into(),
            None => keys.derive_secret("refresh-successor"),
        };
        let verifier = Verifier::local(keys.jwks(), &cfg.tokens);
        Self {
            db,
            keys,
            verifier,
            refresh_key,
            cfg,
        }
    }
}
