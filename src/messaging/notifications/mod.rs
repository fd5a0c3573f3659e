//! Notifications (issue 19): mentions become entries of a feed, each user says how loudly
//! each conversation may reach them, and a worker in every instance turns appended messages
//! into that work, durably (the queue and the feed live in PostgreSQL).
//!
//! - [`preferences`]: per-user defaults, quiet hours, channels; per-conversation level and
//!   mute;
//! - [`feed`]: `GET /api/notifications`, marking entries read;
//! - [`worker`]: the pass over `messaging.notify_queue` that writes the feed, sends
//!   `notification` events and decides the pushes;
//! - [`push`]: Web Push subscriptions and the sender;
//! - [`digest`]: mail for missed messages, with one-click unsubscribe.

pub mod digest;
pub mod feed;
pub mod preferences;
pub mod push;
pub mod worker;
