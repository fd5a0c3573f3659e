//! Ed25519 signing keys of the auth service and the JWKS that publishes them.
//!
//! Keys are PKCS#8 PEM (`openssl genpkey -algorithm ed25519`). The first configured key signs
//! new tokens; every configured key is published, so tokens signed by a key being retired keep
//! verifying until they expire. Each key's `kid` is its JWK thumbprint (RFC 7638): stable,
//! derived from the public key, and the same on every instance.

use anyhow::{anyhow, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::{pkcs8::DecodePrivateKey, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};

use crate::platform::access::{AccessClaims, Jwk, Jwks};

/// One loaded private key.
pub struct KeyPair {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl KeyPair {
    /// Parses a PKCS#8 PEM Ed25519 private key.
    ///
    /// Errors: the PEM is not an Ed25519 PKCS#8 private key.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow!("not an Ed25519 PKCS#8 private key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let kid = thumbprint(&x);
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).context("loading signing key")?;
        Ok(Self {
            jwk: Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    key_id: Some(kid.clone()),
                    ..CommonParameters::default()
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x,
                }),
            },
            kid,
            encoding,
        })
    }
}

/// RFC 7638 thumbprint of an Ed25519 JWK: base64url(SHA-256 of the required members in
/// lexicographic order, no whitespace).
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The active signing key and every published one.
pub struct SigningKeys {
    keys: Vec<KeyPair>,
}

impl SigningKeys {
    /// Loads keys: `inline_pem` first (if set), then each file in order.
    ///
    /// Errors: no key at all, an unreadable file, or a PEM that is not an Ed25519 key.
    pub fn load(inline_pem: Option<&str>, files: &[String]) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(pem) = inline_pem {
            keys.push(KeyPair::from_pem(pem).context("AUTH_SIGNING_KEY_PEM")?);
        }
        for f in files {
            let pem =
                std::fs::read_to_string(f).with_context(|| format!("reading key file {f}"))?;
            keys.push(KeyPair::from_pem(&pem).with_context(|| format!("key file {f}"))?);
        }
        if keys.is_empty() {
            return Err(anyhow!(
                "no signing key: set AUTH_SIGNING_KEY_FILES or AUTH_SIGNING_KEY_PEM \
                 (make one with: openssl genpkey -algorithm ed25519)"
            ));
        }
        keys.dedup_by(|a, b| a.kid == b.kid);
        Ok(Self { keys })
    }

    /// The JWKS with every published key.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Signs `claims` with the active key, `kid` in the header.
    ///
    /// Errors: signing fails (not expected with a loaded key).
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let key = self.keys.first().ok_or_else(|| anyhow!("no signing key"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).context("signing access token")
    }
}
