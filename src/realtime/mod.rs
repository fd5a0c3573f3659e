//! Live delivery (DESIGN.md §4), the top floor: WebSocket tickets and sockets, ordered
//! delivery and typing, the per-instance hub, the LISTEN side that feeds it, and presence.
//! It builds on messaging (state, events, the protocol) and nothing builds on it.

pub mod hub;
pub mod listener;
pub mod presence;
pub mod presence_delivery;
pub mod socket;
pub mod tickets;

use std::sync::Arc;

use actix_web::web;

/// What live delivery adds to the messaging service's state: the local hub and presence.
pub struct Live {
    pub hub: hub::Hub,
    pub presence: Arc<presence::Presence>,
}

/// `web::Data` payload type of [`Live`].
pub type LiveState = Arc<Live>;

/// Registers `POST /api/ws-ticket` and `GET /ws`. Register before the messaging routes: the
/// `/api` scope would otherwise answer 404 for the ticket path.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/ws-ticket").post(tickets::ticket))
        .service(web::resource("/ws").get(tickets::connect));
}
