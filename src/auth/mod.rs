//! The auth service (DESIGN.md §2–3): accounts, sessions with rotating refresh tokens in an
//! HttpOnly cookie, and Ed25519 access tokens published through a JWKS.
//!
//! - [`routes`]: register, login, refresh, logout, JWKS, health;
//! - [`sessions`]: list and revoke one's sessions;
//! - [`account`]: the caller's profile, password and deletion; public profiles and search;
//! - [`recovery`]: email verification and password reset, with [`email_tokens`] (the mailed
//!   single-use links) and [`mails`] (what the mails say), sent through the outbox;
//! - [`totp`] (enrolment, RFC 6238 codes) and [`mfa`] (the second sign-in step, recovery
//!   codes): two-factor sign-in;
//! - [`passkeys`]: WebAuthn passkeys, registered from the security settings, signing in
//!   without a password;
//! - [`audit`]: the append-only, hash-chained audit trail and the caller's security events;
//! - [`session`]: starting and ending sessions (ends are announced to messaging);
//! - [`keys`], [`refresh`], [`password`], [`validate`], [`caller`]: the pieces.

pub mod account;
pub mod attempts;
pub mod audit;
pub mod caller;
pub mod email_tokens;
pub mod keys;
pub mod mails;
pub mod mfa;
pub mod passkeys;
pub mod password;
pub mod recovery;
pub mod refresh;
pub mod routes;
pub mod session;
pub mod sessions;
pub mod totp;
pub mod user;
pub mod validate;

use std::sync::Arc;

use crate::platform::{access::Verifier, config::AuthConfig, db::Primary, mail::Outbox};

/// Shared state of the auth service's handlers.
pub struct AuthState {
    /// The primary: every auth read must be fresh (tokens, credentials), so auth has no replica.
    pub db: Primary,
    /// The readiness check's own primary connection ([`crate::platform::db::monitor_pool`]):
    /// a storm that takes every request connection is not a primary that is down.
    pub monitor: deadpool_postgres::Pool,
    pub keys: keys::SigningKeys,
    /// Verifies this service's own access tokens (bearer endpoints under `/auth`).
    pub verifier: Arc<Verifier>,
    /// Account mail (`auth.mail_outbox`), written in the transaction of its change.
    pub outbox: Outbox,
    /// The WebAuthn relying party (passkeys): `WEBAUTHN_RP_ID` and the accepted origins.
    pub webauthn: webauthn_rs::Webauthn,
    pub cfg: AuthConfig,
}

/// `web::Data` payload type.
pub type State = Arc<AuthState>;

impl AuthState {
    /// Builds the state.
    ///
    /// Errors: the WebAuthn settings do not fit together ([`passkeys::relying_party`]).
    pub fn new(
        db: Primary,
        monitor: deadpool_postgres::Pool,
        keys: keys::SigningKeys,
        outbox: Outbox,
        cfg: AuthConfig,
    ) -> anyhow::Result<Self> {
        let verifier = Verifier::local(keys.jwks(), &cfg.tokens);
        let webauthn = passkeys::relying_party(&cfg)?;
        Ok(Self {
            db,
            monitor,
            keys,
            verifier,
            outbox,
            webauthn,
            cfg,
        })
    }
}
