//! Switchboard: a real-time messaging backend — an auth service and a messaging service
//! (actix-web) behind NGINX on a replicated PostgreSQL. The contract is `DESIGN.md`; the
//! modules follow its parts:
//!
//! - [`auth`]: accounts, sessions, refresh token rotation, signing keys and JWKS;
//! - [`messaging`]: conversations, messages, read markers;
//! - [`realtime`]: the NOTIFY bus, the per-instance hub, WebSockets;
//! - [`db`]: pools, migrations, read/write routing with read-your-writes;
//! - [`access`]: access tokens (EdDSA JWT) and their verification;
//! - [`http`], [`error`], [`config`], [`telemetry`], [`startup`]: plumbing.

pub mod access;
pub mod auth;
pub mod bus;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod messaging;
pub mod metrics;
pub mod openapi;
pub mod realtime;
pub mod secrets;
pub mod startup;
pub mod telemetry;
