//! TLS to PostgreSQL with rustls, configured in the connection URL the way libpq reads it
//! (PostgreSQL docs §32.1.2 "Parameter Key Words" and §32.19 "SSL Support"):
//!
//! - no `sslmode`, or `sslmode=disable`: plaintext (local development only);
//! - `sslmode=verify-full`: TLS; the server's certificate must chain to the CA bundle in
//!   `sslrootcert` (a PEM file, e.g. CloudNativePG's `<cluster>-ca` Secret's `ca.crt`) and
//!   name the host connected to;
//! - `sslmode=require` and `verify-ca` get the same full verification (stricter than libpq,
//!   which skips the host name for those): an unverified server is never accepted;
//! - `allow` and `prefer` are refused — they fall back to plaintext without saying so.
//!
//! tokio-postgres itself knows only `disable`/`prefer`/`require` and no `sslrootcert`, so
//! [`parse`] takes both out of the URL before handing it over.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector every database connection is made with; with `sslmode=disable` it is never
/// asked for a handshake.
pub type Tls = MakeRustlsConnect;

/// Parses a `postgres://` URL (or a `key=value` connection string, which carries no TLS
/// settings here) into a client config and the TLS connector its `sslmode` and
/// `sslrootcert` call for.
///
/// Errors: the URL does not parse; `sslmode` is `allow`, `prefer` or unknown; a verifying
/// mode without `sslrootcert`; a CA file that cannot be read or holds no certificate.
pub fn parse(url: &str) -> anyhow::Result<(tokio_postgres::Config, Tls)> {
    let (rest, mode, root) = split(url)?;
    let mut cfg: tokio_postgres::Config = rest.parse().context("invalid database URL")?;
    let tls = match mode.as_deref() {
        None | Some("disable") => {
            cfg.ssl_mode(SslMode::Disable);
            connector(rustls::RootCertStore::empty())?
        }
        Some("require" | "verify-ca" | "verify-full") => {
            let root = root.ok_or_else(|| {
                anyhow!(
                    "sslmode={} needs sslrootcert=<CA file> in the database URL",
                    mode.as_deref().unwrap_or_default()
                )
            })?;
            cfg.ssl_mode(SslMode::Require);
            connector(roots(&root)?)?
        }
        Some(other) => {
            return Err(anyhow!(
                "sslmode={other} is not accepted: use verify-full (with sslrootcert) or disable"
            ))
        }
    };
    Ok((cfg, tls))
}

/// The URL without `sslmode` and `sslrootcert`, and their (percent-decoded) values. Only
/// those two parameters are touched: the rest of the URL — multi-host authorities, other
/// parameters, their encoding — stays byte for byte. A connection string that is not a URL
/// must not name `sslmode` (it would be silently overridden): TLS settings go in a URL.
///
/// Errors: either parameter given twice; `sslmode` in a key=value string; a value that is
/// not valid UTF-8 once decoded.
fn split(url: &str) -> anyhow::Result<(String, Option<String>, Option<String>)> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        if url.contains("sslmode") || url.contains("sslrootcert") {
            return Err(anyhow!(
                "TLS settings (sslmode, sslrootcert) are read from postgres:// URLs only"
            ));
        }
        return Ok((url.to_owned(), None, None));
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslmode" => &mut mode,
            "sslrootcert" => &mut root,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        if slot.is_some() {
            return Err(anyhow!("{key} is given twice in the database URL"));
        }
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .with_context(|| format!("{key} in the database URL is not UTF-8"))?;
        *slot = Some(decoded.into_owned());
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

fn roots(path: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading the database CA file {path}"))?
    {
        let cert = cert.with_context(|| format!("parsing the database CA file {path}"))?;
        store
            .add(cert)
            .with_context(|| format!("a certificate in {path} is not a usable CA"))?;
    }
    if store.is_empty() {
        return Err(anyhow!("the database CA file {path} holds no certificate"));
    }
    Ok(store)
}

fn connector(roots: rustls::RootCertStore) -> anyhow::Result<Tls> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_leave_the_url_and_the_rest_stays() {
        let (rest, mode, root) =
            split("postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fca.pem&connect_timeout=3")
                .expect("split");
        assert_eq!(rest, "postgres://u:p@db:5432/app?connect_timeout=3");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        let (rest, mode, _) = split("postgres://u:p@db/app").expect("split");
        assert_eq!((rest.as_str(), mode), ("postgres://u:p@db/app", None));
    }

    #[test]
    fn other_parameters_and_hosts_stay_byte_for_byte() {
        let url = "postgres://u:p%2Fw@h1:5432,h2:5433/app?options=-c%20x%3Dy&sslmode=disable&target_session_attrs=read-write";
        let (rest, mode, _) = split(url).expect("split");
        assert_eq!(
            rest,
            "postgres://u:p%2Fw@h1:5432,h2:5433/app?options=-c%20x%3Dy&target_session_attrs=read-write"
        );
        assert_eq!(mode.as_deref(), Some("disable"));
        assert!(split("postgres://u@db/app?sslmode=verify-full&sslmode=disable").is_err());
        assert!(
            parse("host=db sslmode=require").is_err(),
            "key=value TLS settings ignored"
        );
        assert!(parse("host=db user=u dbname=app").is_ok());
    }

    #[test]
    fn unverified_modes_are_refused() {
        for mode in ["prefer", "allow", "nonsense"] {
            let url = format!("postgres://u:p@db/app?sslmode={mode}");
            assert!(parse(&url).is_err(), "{mode} accepted");
        }
        let err = parse("postgres://u:p@db/app?sslmode=verify-full")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("sslrootcert")));
        let (cfg, _) = parse("postgres://u:p@db/app").expect("plaintext");
        assert_eq!(cfg.get_ssl_mode(), SslMode::Disable);
    }
}
