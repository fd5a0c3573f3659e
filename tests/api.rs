//! The API suite: accounts, sessions, conversations, messages, content, the database roles,
//! telemetry, and the adversarial attacks on every boundary (issue 14) — real HTTP and
//! WebSocket clients through NGINX against the stack `scripts/test.sh` starts. One test
//! binary (one compile of the shared harness); the fault suites, which stop servers, are
//! `tests/faults.rs`, and the real-time suite `tests/realtime.rs`.
mod common;

#[path = "api/accounts.rs"]
mod accounts;
#[path = "api/adversarial/mod.rs"]
mod adversarial;
#[path = "api/audit.rs"]
mod audit;
#[path = "api/auth.rs"]
mod auth;
#[path = "api/content.rs"]
mod content;
#[path = "api/database.rs"]
mod database;
#[path = "api/digests.rs"]
mod digests;
#[path = "api/edge.rs"]
mod edge;
#[path = "api/groups.rs"]
mod groups;
#[path = "api/interactions.rs"]
mod interactions;
#[path = "api/messaging.rs"]
mod messaging;
#[path = "api/notifications.rs"]
mod notifications;
#[path = "api/push.rs"]
mod push;
#[path = "api/recovery.rs"]
mod recovery;
#[path = "api/sessions.rs"]
mod sessions;
#[path = "api/telemetry.rs"]
mod telemetry;
#[path = "api/two_factor.rs"]
mod two_factor;
