//! Switchboard: a real-time messaging backend — an auth service and a messaging service
//! (actix-web) behind NGINX on a replicated PostgreSQL. The contract is `DESIGN.md`. The
//! modules are floors; each imports only from the floors below it:
//!
//! 1. [`platform`]: configuration and secrets, telemetry and metrics, the HTTP edge and
//!    problem+json, database pools and read/write routing, the NOTIFY bus, token verification;
//! 2. [`auth`]: accounts, sessions, refresh token rotation, signing keys and JWKS;
//! 3. [`messaging`]: conversations, messages, read markers, its events and wire protocol;
//! 4. [`realtime`]: WebSocket tickets and sockets, the hub, the listener, presence;
//!
//! and, assembling them, [`startup`] (each service's app) and [`openapi`] (its documents).

pub mod platform;

pub mod auth;
pub mod messaging;
pub mod openapi;
pub mod realtime;
pub mod startup;
