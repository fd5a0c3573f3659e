//! The messaging events that travel the bus ([`crate::platform::bus`]) between instances: one typed
//! enum, written by the handlers after their writes commit (and by the auth service for
//! session ends, [`crate::auth::session::SessionEnded`]), read by every instance's listener
//! (`crate::realtime::listener`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::protocol::MessageEvent;
use crate::auth::session::SessionEnded;

/// One event on the bus, externally tagged (`{"conversation": {…}}`): an internally tagged
/// enum would buffer the frame and cannot carry it as raw JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusEvent {
    /// Deliver `frame` (a server frame, already JSON) to the sockets of every participant of
    /// the conversation, except those of the users in `exclude` (the actor of a typing
    /// event, and the users they block).
    Conversation {
        conversation_id: Uuid,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<Uuid>,
        /// For a stored change to a message: its `seq` (only participants who can see it get
        /// the frame) …
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_seq: Option<i64>,
        /// Only participants whose visible range starts after this `seq` (those who joined
        /// after the parent a reply quotes get the frame without the quote).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joined_after: Option<i64>,
        /// … and the conversation revision of the change (orders delivery per socket).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<i64>,
        /// The users who may see it, when the writer knew them at commit (a new message:
        /// the appending statement returns them); otherwise each listener looks them up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipients: Option<Vec<Uuid>>,
        /// W3C `traceparent` of the request that made the change: the fan-out span links
        /// to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
        /// When the change was committed, in microseconds since the Unix epoch (for
        /// `fanout_delay_seconds`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_us: Option<i64>,
        frame: Box<RawValue>,
    },
    /// A user went online or offline: deliver `frame` to everyone who shares a conversation
    /// with them, and to their own other sockets.
    Presence { user_id: Uuid, frame: Box<RawValue> },
    /// Deliver `frame` to the sockets of the listed users (for example a participant who was
    /// just removed, and so no longer receives the conversation's events).
    Users {
        user_ids: Vec<Uuid>,
        frame: Box<RawValue>,
    },
    /// A `message.*` event whose frame is too large for NOTIFY: receivers load the message by
    /// id and build the frame themselves.
    MessageRef {
        conversation_id: Uuid,
        message_id: Uuid,
        event: MessageEvent,
    },
    /// A session ended (logout, refresh token reuse, revocation): close its sockets, and
    /// refuse its access tokens from now on. Written by the auth service.
    SessionRevoked(SessionEnded),
    /// These users' membership of the conversation ended (removed, or left): their sockets
    /// drop its typing state at once and follow it no more.
    MembershipEnded {
        conversation_id: Uuid,
        user_ids: Vec<Uuid>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The auth service's encoding of a session end is the event the listeners read.
    #[test]
    fn auth_session_ends_read_as_bus_events() -> Result<(), serde_json::Error> {
        let id = Uuid::now_v7();
        let payloads = crate::platform::bus::batch_payloads(&crate::auth::session::bus_events(
            &[id],
            "logout",
        ));
        let events: Vec<BusEvent> = serde_json::from_str(&payloads[0])?;
        assert!(
            matches!(&events[..], [BusEvent::SessionRevoked(e)] if e.session_id == id && e.reason == "logout")
        );
        Ok(())
    }
}
