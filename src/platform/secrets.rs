//! Server secrets (DESIGN.md §7): HMAC key rings that rotate — the first key signs, every key
//! verifies — and the startup rule that no secret defaults in production.
//!
//! A service refuses to start with a secret that is missing, shorter than
//! [`MIN_SECRET_BYTES`], or a known placeholder (the values published in `.env.example`,
//! `k8s/secrets.example.yaml` and the development defaults), unless the development switch
//! [`DEV_SWITCH`] is set — which `scripts/run.sh`, `scripts/bench.sh` and the `dev`
//! Kubernetes overlay do, and the test stack and the production manifests never do.

use anyhow::anyhow;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Shortest accepted secret, in bytes (256 bits of key material at the very least when it
/// is random base64, as `openssl rand -base64 32` makes).
pub const MIN_SECRET_BYTES: usize = 32;

/// `ALLOW_INSECURE_DEV_SECRETS=true`: start with development secrets (built-in defaults,
/// short or placeholder values), logging a warning. Never set in production.
pub const DEV_SWITCH: &str = "ALLOW_INSECURE_DEV_SECRETS";

/// Values that are public and so never secret: the placeholders of the example files and
/// the development passwords of the local stack. Anything starting `change-me`,
/// `replace-me` or `switchboard-dev-` (the built-in development keys; any case) counts too.
const KNOWN_PLACEHOLDERS: &[&str] = &[
    "secret",
    "password",
    "postgres-dev",
    "auth-dev",
    "messaging-dev",
    "replication-dev",
];

/// Whether `value` is a published placeholder rather than a secret.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    v.starts_with("change-me")
        || v.starts_with("replace-me")
        || v.starts_with("changeme")
        || KNOWN_PLACEHOLDERS.contains(&v.as_str())
        || v.starts_with("switchboard-dev-")
}

/// HMAC-SHA256 keys for one purpose. Each key is the SHA-256 of its secret's text, so
/// secrets of any length give 32-byte keys. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys, redacted)", self.keys.len())
    }
}

impl KeyRing {
    /// A ring from secrets, the signing one first. An empty list gives an empty ring, which
    /// signs with an all-zero key: [`load`] never builds one.
    pub fn from_secrets<S: AsRef<str>>(secrets: &[S]) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| Sha256::digest(s.as_ref().as_bytes()).into())
                .collect(),
        }
    }

    /// Every key, the signing one first.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// The key new values are signed with.
    pub fn signing_key(&self) -> [u8; 32] {
        self.keys.first().copied().unwrap_or_default()
    }

    /// HMAC-SHA256 of `message` under the signing key (RFC 2104).
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        mac(&self.signing_key(), message)
    }

    /// Whether `tag` — a full or left-truncated HMAC-SHA256 of `message`, at least 16 bytes
    /// (RFC 2104 §5) — was made with any key of the ring; compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        if tag.len() < 16 {
            return false;
        }
        self.keys.iter().any(|k| {
            <Hmac<Sha256> as Mac>::new_from_slice(k).is_ok_and(|mut m| {
                m.update(message);
                m.verify_truncated_left(tag).is_ok()
            })
        })
    }
}

/// HMAC-SHA256 of `message` under `key`.
pub fn mac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(message);
            m.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length; a 32-byte key is never refused.
        Err(_) => [0; 32],
    }
}

/// Checks one secret's value; `Ok` with a warning when the development switch allows it.
///
/// Errors: too short or a placeholder, without the switch.
pub fn check(name: &str, value: &str, dev: bool) -> anyhow::Result<()> {
    let problem = if value.len() < MIN_SECRET_BYTES {
        Some(format!("shorter than {MIN_SECRET_BYTES} bytes"))
    } else if is_placeholder(value) {
        Some("a published placeholder".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) if dev => {
            tracing::warn!(
                variable = name,
                "insecure secret ({p}) allowed by {DEV_SWITCH}"
            );
            Ok(())
        }
        Some(p) => Err(anyhow!(
            "{name} is {p}: give it a random value of at least {MIN_SECRET_BYTES} bytes \
             (openssl rand -base64 32); {DEV_SWITCH}=true allows this for development only"
        )),
    }
}

/// Loads the key ring given in variable `name` (its `value`): secrets separated by commas,
/// the first signs, all verify (rotation: put the new one first, keep the old one until what
/// it signed expired). Unset: `dev_default` under the development switch (`dev`), else an
/// error.
///
/// Errors: missing, short or placeholder secrets without the switch.
pub fn load(
    name: &str,
    value: Option<&SecretString>,
    dev_default: &str,
    dev: bool,
) -> anyhow::Result<KeyRing> {
    let mut secrets: Vec<&str> = value
        .map(|v| {
            v.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if secrets.is_empty() {
        if !dev {
            return Err(anyhow!(
                "{name} is required: a random value of at least {MIN_SECRET_BYTES} bytes \
                 (openssl rand -base64 32), or several separated by commas to rotate \
                 (the first signs); {DEV_SWITCH}=true starts with a development value"
            ));
        }
        tracing::warn!(
            variable = name,
            "no secret given; using the development default ({DEV_SWITCH})"
        );
        secrets.push(dev_default);
    }
    for s in &secrets {
        check(name, s, dev)?;
    }
    Ok(KeyRing::from_secrets(&secrets))
}

/// Checks a database URL read from variable `name`: it parses, and carries no published
/// placeholder or development password unless `dev`.
///
/// Errors: as described.
pub fn check_database_url(name: &str, url: &str, dev: bool) -> anyhow::Result<()> {
    let (cfg, _) = crate::platform::db::tls::parse(url)
        .map_err(|e| anyhow!("{name} is not a usable PostgreSQL URL: {e:#}"))?;
    if let Some(pw) = cfg.get_password() {
        let pw = String::from_utf8_lossy(pw);
        if is_placeholder(&pw) && !dev {
            return Err(anyhow!(
                "{name} carries a published placeholder password; set a real one \
                 ({DEV_SWITCH}=true allows it for development only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of the example files is refused as a production secret.
    #[test]
    fn example_files_hold_only_refused_placeholders() {
        let env = include_str!("../../.env.example");
        let k8s = include_str!("../../k8s/secrets.example.yaml");
        let mut values: Vec<&str> = env
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.contains("PASSWORD") || k.contains("SECRET"))
            .map(|(_, v)| v.trim())
            .collect();
        values.extend(
            k8s.lines()
                .filter_map(|l| l.trim().split_once(": "))
                .filter(|(k, _)| k.contains("secret") || *k == "password")
                .map(|(_, v)| v.trim()),
        );
        assert!(values.len() >= 6, "found {values:?}");
        for v in values {
            assert!(
                check("X", v, false).is_err(),
                "{v:?} must be refused in production"
            );
        }
    }

    #[test]
    fn rings_sign_with_the_first_key_and_verify_with_any() {
        let old = KeyRing::from_secrets(&["old-secret-old-secret-old-secret!"]);
        let rotated = KeyRing::from_secrets(&[
            "new-secret-new-secret-new-secret!",
            "old-secret-old-secret-old-secret!",
        ]);
        let tag = old.sign(b"0/16B374D8");
        assert!(rotated.verify(b"0/16B374D8", &tag[..16]));
        assert!(!rotated.verify(b"0/16B374D9", &tag[..16]));
        assert!(!rotated.verify(b"0/16B374D8", &tag[..8]), "too short");
        assert_ne!(rotated.sign(b"x"), old.sign(b"x"));
        assert!(format!("{rotated:?}").contains("redacted"));
    }

    #[test]
    fn short_and_placeholder_secrets_are_refused_without_the_switch() {
        assert!(check("X", "short", false).is_err());
        assert!(check("X", "change-me-at-least-32-characters-long!!", false).is_err());
        assert!(check("X", "REPLACE-ME-at-least-32-characters-long", false).is_err());
        assert!(check("X", "short", true).is_ok());
        assert!(check("X", "q8Jx3XnE0m6Yt0b7mS4v2dQe9hWcR1uZ/aKp5LfGi2o=", false).is_ok());
    }
}
