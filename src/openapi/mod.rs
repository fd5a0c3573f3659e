//! The API contract as OpenAPI 3.1 documents generated from the handlers and types (utoipa):
//! one per service, served at `/auth/openapi.json` and `/api/openapi.json`, with Swagger UI
//! at `/api/docs/`; and the WebSocket protocol as an AsyncAPI 3.0 document
//! (`/api/asyncapi.json`) built from the same schemas. The committed copies under `openapi/`
//! must equal what the code generates (a unit test below; `UPDATE_OPENAPI=1 cargo test
//! openapi` rewrites them).
//!
//! Handlers declare their success answers, parameters and bodies; [`problems`] adds the
//! error answers every operation can give (problem+json, RFC 9457); [`asyncapi`] builds
//! the WebSocket document.

mod asyncapi;
mod problems;

use std::sync::LazyLock;

use utoipa::{
    openapi::{
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        OpenApi as Doc,
    },
    Modify, OpenApi,
};

pub use asyncapi::asyncapi;
use problems::Problems;
pub use problems::{OwnErrors, Problem, OWN_ERRORS};

use crate::{auth, messaging, realtime};

/// The auth service's API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard auth", version = env!("CARGO_PKG_VERSION"),
        description = "Accounts, sessions and tokens. Access tokens are Ed25519 JWTs (5 minutes) sent as `Authorization: Bearer`; the refresh token is the HttpOnly `__Secure-refresh_token` cookie, rotated on every refresh (RFC 9700 §4.14), usable only with `X-CSRF: 1`. Errors are RFC 9457 problem details."),
    paths(
        auth::routes::register, auth::routes::login, auth::routes::refresh_session,
        auth::routes::logout, auth::sessions::list, auth::sessions::revoke_others,
        auth::sessions::revoke, auth::account::me, auth::account::update,
        auth::account::delete, auth::account::change_password, auth::account::search,
        auth::account::profile, auth::recovery::verify_email,
        auth::recovery::resend_verification, auth::recovery::forgot_password,
        auth::recovery::reset_password, auth::mfa::answer, auth::totp::start,
        auth::totp::confirm, auth::totp::disable, auth::totp::status,
        auth::passkeys::list, auth::passkeys::registration_options, auth::passkeys::register,
        auth::passkeys::remove, auth::passkeys::sign_in_options, auth::passkeys::sign_in, auth::audit::list, auth::routes::jwks, auth::routes::healthz,
        auth::routes::readyz,
    ),
    components(schemas(Problem)),
    security(("bearer" = [])),
    modifiers(&Security, &Problems),
    tags((name = "auth", description = "Sign up, sign in, refresh, sign out, password reset, keys"),
        (name = "sessions", description = "The caller's sessions (refresh token families)"),
        (name = "account", description = "The caller's account and its verified address"),
        (name = "passkeys", description = "The caller's passkeys (WebAuthn); signing in with one is under auth"),
        (name = "users", description = "Public profiles"),
        (name = "operations", description = "Health and readiness")),
)]
pub struct AuthApi;

/// The messaging service's API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard messaging", version = env!("CARGO_PKG_VERSION"),
        description = "Conversations, messages, receipts, attachments and search, with `Authorization: Bearer <access token>` from the auth service. Writes answer `X-Consistency-Token` (and the `ryw_lsn` cookie): send it back on reads to see your own writes. Live events come over the WebSocket `GET /ws?ticket=…` (see `/api/asyncapi.json`). Errors are RFC 9457 problem details."),
    paths(
        messaging::conversations::create, messaging::conversations::list,
        messaging::conversations::get, messaging::groups::roles::rename,
        messaging::messages::send, messaging::messages::history,
        messaging::conversations::read, messaging::groups::membership::add, messaging::groups::membership::remove,
        messaging::groups::roles::set_role, messaging::groups::membership::leave,
        messaging::attachments::upload, messaging::messages::edit,
        messaging::messages::delete, messaging::messages::read,
        messaging::receipts::receipts, messaging::attachments::download,
        messaging::avatars::put_avatar, messaging::avatars::delete_avatar,
        messaging::avatars::get_avatar, messaging::search::search,
        messaging::notifications::preferences::get, messaging::notifications::preferences::put,
        messaging::notifications::preferences::put_conversation,
        messaging::notifications::feed::list, messaging::notifications::feed::mark_read,
        messaging::notifications::push::key, messaging::notifications::push::subscribe,
        messaging::notifications::push::unsubscribe,
        messaging::notifications::digest::unsubscribe,
        messaging::notifications::digest::unsubscribe_page,
        messaging::reactions::add, messaging::reactions::remove,
        messaging::pins::pin, messaging::pins::unpin, messaging::pins::list,
        messaging::versions::list, messaging::conversations::mark_unread,
        messaging::forward::forward, messaging::threads::thread, messaging::threads::read,
        messaging::typing::typing, messaging::conversations::hide, messaging::contacts::online,
        messaging::avatars::put_group_avatar, messaging::avatars::delete_group_avatar,
        messaging::avatars::get_group_avatar,
        messaging::blocks::list, messaging::blocks::block, messaging::blocks::unblock,
        realtime::tickets::ticket, messaging::healthz, messaging::readyz,
    ),
    components(schemas(Problem)),
    security(("bearer" = [])),
    modifiers(&Security, &Problems),
    tags((name = "conversations", description = "Direct and group conversations"),
        (name = "groups", description = "Group membership, roles and names (admins)"),
        (name = "messages", description = "History, sending, edits and their versions, deletes, reactions, pins, read markers and unread marks, receipts, search"),
        (name = "blocks", description = "Blocking users: no direct conversation, group invitation, presence or typing from them"),
        (name = "attachments", description = "Files and avatars"),
        (name = "notifications", description = "Notification settings, per-conversation levels and mutes, the notification feed"),
        (name = "realtime", description = "Tickets for the WebSocket"),
        (name = "operations", description = "Health and readiness")),
)]
pub struct MessagingApi;

/// The security schemes: the bearer access token, and the refresh cookie with its CSRF
/// header (both required on /auth/refresh and /auth/logout).
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from /auth/login, /auth/register or /auth/refresh (EdDSA JWT, 5 minutes)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Secure-refresh_token",
                "The HttpOnly refresh token cookie (Path=/auth, Secure), set by register, login and refresh. Named `refresh_token`, without Secure, only on plain-HTTP development stacks (COOKIE_SECURE=false).",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF",
                "Must be `1`: a cross-site form cannot set it. Cookie-authenticated endpoints also check `Origin` against the allowed origins.",
            ))),
        );
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The auth service's OpenAPI document, as served and committed (pretty JSON).
pub fn auth_json() -> String {
    pretty(&AuthApi::openapi())
}

/// The messaging service's OpenAPI document, as served and committed (pretty JSON).
pub fn messaging_json() -> String {
    pretty(&MessagingApi::openapi())
}

/// The AsyncAPI document of the WebSocket, as served and committed (pretty JSON).
pub fn asyncapi_json() -> String {
    pretty(&asyncapi())
}

/// A generated document, computed on first use, served as JSON.
fn document(doc: &'static LazyLock<String>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache"))
        .body(doc.as_str())
}

static AUTH_DOC: LazyLock<String> = LazyLock::new(auth_json);
static MESSAGING_DOC: LazyLock<String> = LazyLock::new(messaging_json);
static ASYNCAPI_DOC: LazyLock<String> = LazyLock::new(asyncapi_json);

/// `GET /auth/openapi.json`: the auth service's OpenAPI 3.1 document.
pub async fn serve_auth() -> actix_web::HttpResponse {
    document(&AUTH_DOC)
}

/// `GET /api/openapi.json`: the messaging service's OpenAPI 3.1 document.
pub async fn serve_messaging() -> actix_web::HttpResponse {
    document(&MESSAGING_DOC)
}

/// Registers the auth service's document at `/auth/openapi.json`. Register before
/// `crate::auth::routes::configure`: the `/auth` scope would otherwise answer 404 for it.
pub fn configure_auth(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(actix_web::web::resource("/auth/openapi.json").get(serve_auth));
}

/// Registers the messaging service's documents (`/api/openapi.json`, `/api/asyncapi.json`)
/// and Swagger UI for both services at `/api/docs/`. Register before
/// `crate::messaging::configure`: the `/api` scope would otherwise answer 404 for them.
pub fn configure_messaging(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web::resource;
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/api/docs/{_:.*}").config(
            // No validator badge: it would load an image from a third-party host, which the
            // page's Content-Security-Policy (nginx/) refuses.
            utoipa_swagger_ui::Config::new(["/api/openapi.json", "/auth/openapi.json"])
                .validator_url("none"),
        ),
    )
    .service(resource("/api/openapi.json").get(serve_messaging))
    .service(resource("/api/asyncapi.json").get(serve_asyncapi));
}

/// `GET /api/asyncapi.json`: the WebSocket protocol as an AsyncAPI 3.0 document.
pub async fn serve_asyncapi() -> actix_web::HttpResponse {
    document(&ASYNCAPI_DOC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed documents equal the generated ones, so API changes show in review.
    /// `UPDATE_OPENAPI=1 cargo test openapi` writes them.
    #[test]
    fn committed_openapi_documents_match_the_code() -> std::io::Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi");
        let update = std::env::var_os("UPDATE_OPENAPI").is_some();
        for (file, generated) in [
            ("auth.json", auth_json()),
            ("messaging.json", messaging_json()),
            ("asyncapi.json", asyncapi_json()),
        ] {
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &generated)?;
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "openapi/{file} differs from what the code generates: run `UPDATE_OPENAPI=1 cargo test openapi` and commit it"
            );
        }
        Ok(())
    }

    /// Operation ids are unique within each document (OpenAPI 3.1 §4.8.10.1: "The id MUST be
    /// unique among all operations described in the API"); code generators name methods by them.
    #[test]
    fn operation_ids_are_unique_per_document() {
        for doc in [AuthApi::openapi(), MessagingApi::openapi()] {
            let mut seen = std::collections::BTreeMap::new();
            for (path, item) in &doc.paths.paths {
                for op in [&item.get, &item.post, &item.put, &item.patch, &item.delete]
                    .into_iter()
                    .flatten()
                {
                    let id = op.operation_id.clone().unwrap_or_default();
                    if let Some(other) = seen.insert(id.clone(), path.clone()) {
                        panic!("operationId {id:?} on {path} and {other}");
                    }
                }
            }
        }
    }

    /// Each limit the code enforces is the one the schema states (the schema attributes take
    /// literals; this keeps them equal to the constants).
    #[test]
    fn schema_limits_are_the_enforced_ones() {
        let doc: serde_json::Value = serde_json::from_str(&messaging_json()).unwrap_or_default();
        let prop = |schema: &str, field: &str, key: &str| {
            doc["components"]["schemas"][schema]["properties"][field][key].as_u64()
        };
        let names = messaging::domain::GroupName::MAX_CHARS as u64;
        let participants = messaging::conversations::MAX_PARTICIPANTS as u64;
        let client_ids = messaging::messages::MAX_CLIENT_ID_CHARS as u64;
        assert_eq!(prop("CreateConversation", "name", "maxLength"), Some(names));
        assert_eq!(prop("Rename", "name", "maxLength"), Some(names));
        assert_eq!(
            prop("CreateConversation", "participant_ids", "maxItems"),
            Some(participants)
        );
        assert_eq!(
            prop("AddParticipants", "user_ids", "maxItems"),
            Some(participants)
        );
        assert_eq!(
            prop("SendMessage", "client_id", "maxLength"),
            Some(client_ids)
        );
        let content = messaging::domain::MessageContent::DEFAULT_MAX_CHARS as u64;
        assert_eq!(prop("SendMessage", "content", "maxLength"), Some(content));
        assert_eq!(prop("EditMessage", "content", "maxLength"), Some(content));
        let setting = <crate::platform::config::MessagingConfig as clap::CommandFactory>::command()
            .get_arguments()
            .find(|a| a.get_id() == "message_max_chars")
            .and_then(|a| a.get_default_values().first().cloned());
        assert_eq!(
            setting.and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok())),
            Some(content),
            "MESSAGE_MAX_CHARS defaults to the schema's limit"
        );
        let auth: serde_json::Value = serde_json::from_str(&auth_json()).unwrap_or_default();
        let auth_prop = |schema: &str, field: &str, key: &str| {
            auth["components"]["schemas"][schema]["properties"][field][key].clone()
        };
        use crate::auth::validate::{DisplayName, Email, Username};
        let n = |v: usize| serde_json::json!(v);
        assert_eq!(
            auth_prop("RegisterRequest", "username", "minLength"),
            n(Username::MIN_CHARS)
        );
        assert_eq!(
            auth_prop("RegisterRequest", "username", "maxLength"),
            n(Username::MAX_CHARS)
        );
        assert_eq!(
            auth_prop("RegisterRequest", "username", "pattern"),
            Username::PATTERN
        );
        for schema in ["RegisterRequest", "UpdateAccount"] {
            assert_eq!(
                auth_prop(schema, "email", "maxLength"),
                n(Email::MAX_OCTETS)
            );
            assert_eq!(
                auth_prop(schema, "display_name", "minLength"),
                n(DisplayName::MIN_CHARS)
            );
            assert_eq!(
                auth_prop(schema, "display_name", "maxLength"),
                n(DisplayName::MAX_CHARS)
            );
        }
        let quote = messaging::model::QUOTE_CHARS;
        assert!(
            messaging::model::MESSAGE_COLUMNS.contains(&format!("left(parent.content, {quote})")),
            "the quote's SQL cuts at QUOTE_CHARS"
        );
    }

    /// The JWK the JWKS endpoint sends (jsonwebtoken's type) has exactly the members the
    /// document describes, and a verifier built from it accepts the key's tokens.
    #[test]
    fn the_documented_jwk_is_the_one_sent() -> anyhow::Result<()> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pem = key.to_pkcs8_pem(Default::default())?;
        let pair = auth::keys::KeyPair::from_pem(&pem)?;
        let sent = serde_json::to_value(&pair.jwk)?;
        let mut sent: Vec<String> = sent
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&auth_json())?;
        let mut documented: Vec<String> = doc["components"]["schemas"]["Jwk"]["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        sent.sort();
        documented.sort();
        assert_eq!(sent, documented);
        assert_eq!(serde_json::to_value(&pair.jwk)?["kty"], "OKP");
        Ok(())
    }

    #[test]
    fn every_operation_documents_its_errors_as_problems() {
        for doc in [AuthApi::openapi(), MessagingApi::openapi()] {
            for (path, item) in &doc.paths.paths {
                for op in [&item.get, &item.post, &item.put, &item.patch, &item.delete]
                    .into_iter()
                    .flatten()
                {
                    if !path.ends_with("/readyz") {
                        assert!(op.responses.responses.contains_key("503"), "{path}");
                    }
                    assert!(
                        op.responses.responses.keys().any(|k| k.starts_with('2')),
                        "{path} has a success answer"
                    );
                }
            }
        }
    }
}
