//! Access tokens (DESIGN.md §2): Ed25519-signed JWTs (`alg: EdDSA`, RFC 8037) with a `kid`,
//! and the JSON Web Key Set (RFC 7517) that publishes the public keys.
//!
//! The auth service signs with [`crate::auth::keys::SigningKeys`]; the messaging service
//! verifies with a [`Verifier`] fed from the auth service's JWKS.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::{platform::config::TokenSettings, platform::error::ApiError};

/// Claims of an access token. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: Uuid,
    /// Session id: the refresh token family this token was issued from.
    pub sid: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
}

/// JSON Web Keys (RFC 7517) are `jsonwebtoken`'s own types; ours are Ed25519 keys in OKP
/// form (RFC 8037 §2).
pub use jsonwebtoken::jwk::{Jwk, JwkSet as Jwks};

// The API document's description of what is sent (a [`Jwk`]); a unit test in openapi.rs
// keeps the two alike.
/// One public key in JWK form (RFC 8037 §2: `kty: OKP`, `crv: Ed25519`, `x` = base64url key).
#[derive(utoipa::ToSchema)]
#[schema(as = Jwk)]
#[allow(dead_code)]
pub struct JwkSchema {
    kty: String,
    crv: String,
    x: String,
    kid: String,
    alg: Option<String>,
    #[schema(rename = "use")]
    use_: Option<String>,
}

/// A JSON Web Key Set: `{"keys": [Jwk, …]}`.
#[derive(utoipa::ToSchema)]
#[schema(as = Jwks)]
#[allow(dead_code)]
pub struct JwksSchema {
    keys: Vec<JwkSchema>,
}

/// Clock leeway on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 30;

/// Verified tokens remembered at most ([`Verifier::verify`]): about 4 MiB of token text
/// and claims at the most.
const VERIFIED_CAPACITY: usize = 10_000;

/// The verification rules: `EdDSA` only (the header's `alg` is never trusted to pick one),
/// `iss`, `aud`, `exp` and `nbf` checked with 30 s of clock leeway.
pub fn validation(settings: &TokenSettings) -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[settings.issuer.as_str()]);
    v.set_audience(&[settings.audience.as_str()]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = LEEWAY_SECS as u64;
    v
}

/// Where a [`Verifier`] gets its keys from.
struct RemoteJwks {
    url: String,
    http: reqwest::Client,
    min_refresh: Duration,
}

/// Verifies access tokens. A remote verifier (messaging) fetches the auth service's JWKS and
/// fetches it again when a token names a `kid` it does not know — at most once per
/// `min_refresh`, so a flood of made-up `kid`s cannot turn into a flood of JWKS requests. A
/// local verifier (auth) knows its own keys.
///
/// A token that verified is remembered with its claims (by its full text, at most
/// [`VERIFIED_CAPACITY`] of them, least recently used first out) until its `exp` passes, so
/// a client's next requests skip the Ed25519 check; a key set refresh forgets them all.
/// (Whether the token's session ended is checked on every request, after this.)
pub struct Verifier {
    remote: Option<RemoteJwks>,
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    refresh: Mutex<Option<tokio::time::Instant>>,
    verified: quick_cache::sync::Cache<String, AccessClaims>,
}

impl Verifier {
    /// A verifier for the JWKS at `jwks_url`, with no keys yet: they are fetched on first use.
    ///
    /// Errors: the HTTP client cannot be built.
    pub fn remote(
        jwks_url: String,
        settings: &TokenSettings,
        min_refresh: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            remote: Some(RemoteJwks {
                url: jwks_url,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(3))
                    .build()?,
                min_refresh,
            }),
            validation: validation(settings),
            keys: RwLock::new(HashMap::new()),
            refresh: Mutex::new(None),
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
        }))
    }

    /// A verifier for a fixed key set.
    pub fn local(jwks: Jwks, settings: &TokenSettings) -> Arc<Self> {
        Arc::new(Self {
            remote: None,
            validation: validation(settings),
            keys: RwLock::new(decoding_keys(jwks)),
            refresh: Mutex::new(None),
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
        })
    }

    /// Fetches the JWKS and replaces the known keys; a local verifier keeps its keys.
    /// Keys that are not Ed25519 are skipped.
    ///
    /// Errors: the URL cannot be fetched or the body is not a JWKS.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let Some(remote) = &self.remote else {
            return Ok(self.keys.read().await.len());
        };
        let jwks: Jwks = remote
            .http
            .get(&remote.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let map = decoding_keys(jwks);
        let n = map.len();
        *self.keys.write().await = map;
        self.verified.clear();
        tracing::info!(keys = n, "JWKS refreshed");
        Ok(n)
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Some(k.clone());
        }
        {
            let mut last = self.refresh.lock().await;
            // Another request may have refreshed while this one waited for the lock.
            if let Some(k) = self.keys.read().await.get(kid) {
                return Some(k.clone());
            }
            let Some(remote) = &self.remote else {
                return None;
            };
            let due = last.is_none_or(|t| t.elapsed() >= remote.min_refresh);
            if due {
                *last = Some(tokio::time::Instant::now());
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "JWKS refresh failed");
                }
            }
        }
        self.keys.read().await.get(kid).cloned()
    }

    /// Verifies a compact JWS access token.
    ///
    /// Errors: 401 (`invalid_token`) for a malformed token, an unknown `kid`, a bad signature,
    /// a wrong `iss`/`aud`, or an expired or not-yet-valid token.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, ApiError> {
        if let Some(claims) = self.verified.get(token) {
            let now = chrono::Utc::now().timestamp();
            if now <= claims.exp + LEEWAY_SECS && now + LEEWAY_SECS >= claims.nbf {
                return Ok(claims);
            }
            self.verified.remove(token);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::bearer("malformed access token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::bearer("access token algorithm not accepted"));
        }
        let kid = header
            .kid
            .ok_or_else(|| ApiError::bearer("access token has no kid"))?;
        let key = self
            .key(&kid)
            .await
            .ok_or_else(|| ApiError::bearer("access token signed by an unknown key"))?;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, &key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                ApiError::bearer(match e.kind() {
                    K::ExpiredSignature => "access token expired",
                    K::ImmatureSignature => "access token not yet valid",
                    K::InvalidAudience => "access token audience not accepted",
                    K::InvalidIssuer => "access token issuer not accepted",
                    K::InvalidSignature => "access token signature invalid",
                    _ => "access token invalid",
                })
            })?;
        self.verified.insert(token.to_owned(), data.claims.clone());
        Ok(data.claims)
    }
}

/// Ed25519 keys of a JWKS by `kid`; other key types and malformed keys are skipped.
fn decoding_keys(jwks: Jwks) -> HashMap<String, DecodingKey> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    let mut map = HashMap::new();
    for k in jwks.keys {
        let ed25519 = matches!(&k.algorithm,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519);
        let Some(kid) = k.common.key_id.clone().filter(|_| ed25519) else {
            continue;
        };
        match DecodingKey::from_jwk(&k) {
            Ok(key) => {
                map.insert(kid, key);
            }
            Err(e) => tracing::warn!(kid = %kid, error = %e, "skipping malformed JWK"),
        }
    }
    map
}

/// Verifies the bearer token of a request (`token`, from [`bearer_token`]) and records the
/// user on the request span.
///
/// Errors: 401 for a missing token and as [`Verifier::verify`].
pub async fn verify_bearer(
    verifier: &Verifier,
    token: Option<String>,
) -> Result<AccessClaims, ApiError> {
    let token = token.ok_or_else(|| ApiError::bearer("missing bearer access token"))?;
    let claims = verifier.verify(&token).await?;
    tracing::Span::current().record("user.id", tracing::field::display(claims.sub));
    Ok(claims)
}

/// The bearer token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1).
pub fn bearer_token(req: &actix_web::HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(token.trim())
    } else {
        None
    }
}
