//! The platform floor: everything the services share that knows nothing of accounts or
//! messages — configuration and secrets, telemetry and metrics, the HTTP edge and its
//! problem+json errors, database pools with read/write routing, the NOTIFY event bus,
//! access-token verification, and the process's open-files limit. Nothing here imports
//! `auth`, `messaging` or `realtime`.

pub mod access;
pub mod backlog;
pub mod bus;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod open_files;
pub mod queue_time;
pub mod secrets;
pub mod tasks;
pub mod telemetry;
pub mod text;
pub mod timestamp;
