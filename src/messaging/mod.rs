//! The messaging service (DESIGN.md §3–5): conversations, participants, messages, read
//! markers, and the WebSocket entry point. Every handler names its pool through
//! [`crate::db::Routing`]: writes on the primary, reads on the replica with read-your-writes.

pub mod attachments;
pub mod caller;
pub mod consistency;
pub mod conversations;
pub mod groups;
pub mod messages;
pub mod model;
pub mod search;

use std::sync::Arc;

use actix_web::web;

use crate::{
    access::Verifier,
    config::MessagingConfig,
    db::Routing,
    realtime::{bus::Publisher, hub::Hub},
};

/// Shared state of the messaging service's handlers.
pub struct MessagingState {
    pub db: Routing,
    pub verifier: Arc<Verifier>,
    pub publisher: Publisher,
    pub hub: Hub,
    pub cfg: MessagingConfig,
}

/// `web::Data` payload type.
pub type State = Arc<MessagingState>;

/// Registers `/api/*` and `/ws`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .route("/healthz", web::get().to(crate::http::healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/conversations", web::post().to(conversations::create))
            .route("/conversations", web::get().to(conversations::list))
            .route("/conversations/{id}", web::get().to(conversations::get))
            .route(
                "/conversations/{id}/messages",
                web::post().to(messages::send),
            )
            .route(
                "/conversations/{id}/messages",
                web::get().to(messages::history),
            )
            .route(
                "/conversations/{id}/read",
                web::post().to(conversations::read),
            )
            .route("/messages/{id}/read", web::post().to(messages::read))
            .route("/ws-ticket", web::post().to(crate::realtime::ws::ticket)),
    )
    .route("/ws", web::get().to(crate::realtime::ws::connect));
}

/// `GET /api/readyz`: 200 while reads can be served (primary or replica up); `read_only`
/// when only the replica answers.
async fn readyz(state: web::Data<State>) -> actix_web::HttpResponse {
    let (primary, replica) = tokio::join!(
        crate::db::ping(state.db.primary_pool()),
        crate::db::ping(state.db.replica_pool())
    );
    crate::http::readiness(
        primary || replica,
        serde_json::json!({"primary": primary, "replica": replica, "read_only": !primary && replica}),
    )
}
