//! Live delivery (DESIGN.md §4): the NOTIFY bus between instances, the per-instance hub of
//! sockets, the LISTEN side that feeds it, presence, the protocol, and the WebSocket endpoint.

pub mod bus;
pub mod hub;
pub mod listener;
pub mod presence;
pub mod protocol;
pub mod socket;
pub mod tickets;
