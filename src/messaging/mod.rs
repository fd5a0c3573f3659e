//! The messaging service (DESIGN.md §3–5): conversations, participants, messages, read
//! markers, and the WebSocket entry point. Every handler names its pool through
//! [`crate::platform::db::Routing`]: writes on the primary, reads on the replica with read-your-writes.

pub mod admission;
pub mod append;
pub mod attachments;
pub mod avatars;
pub mod blocks;
pub mod budget;
pub mod caller;
pub mod consistency;
pub mod contacts;
pub mod conversations;
pub mod delivered;
pub mod domain;
pub mod ended_sessions;
pub mod events;
pub mod file_serving;
pub mod forward;
pub mod group_commit;
pub mod groups;
pub mod mentions;
pub mod messages;
pub mod model;
pub mod notifications;
pub mod pins;
pub mod protocol;
pub mod publish;
pub mod reactions;
pub mod receipts;
pub mod search;
pub mod threads;
pub mod typing;
pub mod versions;
pub mod visibility;

use std::sync::Arc;

use actix_web::web;

use crate::{
    platform::access::Verifier, platform::bus::Publisher, platform::config::MessagingConfig,
    platform::db::Routing,
};

/// Shared state of the messaging service's handlers.
pub struct MessagingState {
    pub db: Arc<Routing>,
    /// Sessions ended recently: their access tokens are refused.
    pub ended: Arc<ended_sessions::EndedSessions>,
    pub verifier: Arc<Verifier>,
    pub publisher: Publisher,
    /// Sends waiting for group commit ([`group_commit`]).
    pub sends: group_commit::SendQueue,
    /// Web Push, when a VAPID key is configured.
    pub push: Option<Arc<notifications::push::Push>>,
    pub cfg: MessagingConfig,
}

/// `web::Data` payload type.
pub type State = Arc<MessagingState>;

/// Registers `/api/*` (the WebSocket's routes are `crate::realtime::configure`'s, the API
/// documents `crate::openapi::configure_messaging`'s). Resources (not bare routes), so a
/// known path with the wrong method answers 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::resource;
    cfg.service(
        web::scope("/api")
            .service(resource("/healthz").get(healthz))
            .service(resource("/readyz").get(readyz))
            .service(
                resource("/conversations")
                    .post(conversations::create)
                    .get(conversations::list),
            )
            .service(
                resource("/conversations/{id}")
                    .get(conversations::get)
                    .patch(groups::roles::rename),
            )
            .service(
                resource("/conversations/{id}/messages")
                    .post(messages::send)
                    .get(messages::history),
            )
            .service(resource("/conversations/{id}/read").post(conversations::read))
            .service(resource("/conversations/{id}/participants").post(groups::membership::add))
            .service(
                resource("/conversations/{id}/participants/{user_id}")
                    .delete(groups::membership::remove)
                    .patch(groups::roles::set_role),
            )
            .service(resource("/conversations/{id}/leave").post(groups::membership::leave))
            .service(resource("/conversations/{id}/attachments").post(attachments::upload))
            .service(
                resource("/messages/{id}")
                    .patch(messages::edit)
                    .delete(messages::delete),
            )
            .service(resource("/messages/{id}/read").post(messages::read))
            .service(
                resource("/messages/{id}/reactions/{emoji}")
                    .put(reactions::add)
                    .delete(reactions::remove),
            )
            .service(
                resource("/messages/{id}/pin")
                    .put(pins::pin)
                    .delete(pins::unpin),
            )
            .service(resource("/messages/{id}/versions").get(versions::list))
            .service(resource("/messages/{id}/forward").post(forward::forward))
            .service(resource("/messages/{id}/thread").get(threads::thread))
            .service(resource("/messages/{id}/thread/read").post(threads::read))
            .service(resource("/conversations/{id}/pins").get(pins::list))
            .service(resource("/conversations/{id}/unread").post(conversations::mark_unread))
            .service(resource("/conversations/{id}/typing").post(typing::typing))
            .service(resource("/conversations/{id}/hide").post(conversations::hide))
            .service(resource("/contacts/online").get(contacts::online))
            .service(resource("/blocks").get(blocks::list))
            .service(
                resource("/blocks/{user_id}")
                    .put(blocks::block)
                    .delete(blocks::unblock),
            )
            .service(resource("/messages/{id}/receipts").get(receipts::receipts))
            .service(resource("/attachments/{id}").get(attachments::download))
            .service(
                resource("/users/me/avatar")
                    .put(avatars::put_avatar)
                    .delete(avatars::delete_avatar),
            )
            .service(resource("/users/{id}/avatar").get(avatars::get_avatar))
            .service(
                resource("/conversations/{id}/avatar")
                    .put(avatars::put_group_avatar)
                    .delete(avatars::delete_group_avatar)
                    .get(avatars::get_group_avatar),
            )
            .service(resource("/search").get(search::search))
            .service(
                resource("/conversations/{id}/notifications")
                    .put(notifications::preferences::put_conversation),
            )
            .service(
                resource("/notification-settings")
                    .get(notifications::preferences::get)
                    .put(notifications::preferences::put),
            )
            .service(resource("/notifications").get(notifications::feed::list))
            .service(resource("/notifications/read").post(notifications::feed::mark_read))
            .service(
                resource("/notifications/unsubscribe")
                    .get(notifications::digest::unsubscribe_page)
                    .post(notifications::digest::unsubscribe),
            )
            .service(resource("/push/key").get(notifications::push::key))
            .service(resource("/push/subscriptions").post(notifications::push::subscribe))
            .service(resource("/push/subscriptions/{id}").delete(notifications::push::unsubscribe)),
    );
}

/// `GET /api/healthz`: 200 while the process serves requests.
#[utoipa::path(get, path = "/api/healthz", tag = "operations", operation_id = "api_healthz", security(()),
    responses((status = 200, description = "Alive.", body = crate::platform::http::Health)))]
pub(crate) async fn healthz() -> actix_web::HttpResponse {
    crate::platform::http::healthz().await
}

/// `GET /api/readyz`: 200 while reads can be served (the primary or a healthy replica);
/// `read_only` when only replicas are up. Each replica's last health is reported. With the
/// primary up, not ready until the sessions ended recently are loaded (so no ended
/// session's token is served by a fresh instance).
#[utoipa::path(get, path = "/api/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready (perhaps read-only: only replicas answer).", body = crate::platform::http::Readiness),
        (status = 503, description = "Neither the primary nor a replica answers.", body = crate::platform::http::Readiness)))]
pub(crate) async fn readyz(state: web::Data<State>) -> actix_web::HttpResponse {
    let primary = state.db.ping_primary().await;
    let replicas: Vec<serde_json::Value> = state
        .db
        .replicas()
        .iter()
        .map(|r| serde_json::json!({"name": r.name, "health": r.health()}))
        .collect();
    let any_replica = state.db.replicas().iter().any(|r| r.health().healthy);
    let sessions_loaded = state.ended.loaded();
    crate::platform::http::readiness(
        (primary || any_replica) && (sessions_loaded || !primary),
        serde_json::json!({
            "primary": primary,
            "ended_sessions_loaded": sessions_loaded,
            "replicas": replicas,
            "read_only": !primary && any_replica,
        }),
    )
}
