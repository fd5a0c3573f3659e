//! Publishing what changed, after the write committed: frames for a conversation's
//! participants (or some users), and `message.*` events split by who may see a reply's quote,
//! queued on the bus ([`crate::platform::bus`]) for every instance's listener.

use uuid::Uuid;

use super::{
    append::Audience,
    events::BusEvent,
    model::Message,
    protocol::{MessageEvent, ServerFrame},
    State,
};
use crate::platform::bus::MAX_PAYLOAD;

/// Queues a frame for every current participant of a conversation (after the write
/// committed), except `exclude_user`.
pub fn publish_frame(
    state: &State,
    conversation_id: Uuid,
    exclude_user: Option<Uuid>,
    frame: String,
) {
    publish_frame_except(
        state,
        conversation_id,
        exclude_user.into_iter().collect(),
        frame,
    );
}

/// Queues a frame for every current participant of a conversation except the users in
/// `exclude`.
pub fn publish_frame_except(
    state: &State,
    conversation_id: Uuid,
    exclude: Vec<Uuid>,
    frame: String,
) {
    publish(
        state,
        conversation_id,
        exclude,
        (None, None),
        None,
        None,
        frame,
    );
}

/// Queues the frame of a stored change to a message at `(seq, rev)`: delivered only to
/// participants who can see that message, in revision order on each socket. `recipients`,
/// when the appending statement returned them, spares the listeners a membership lookup.
pub fn publish_message_frame(
    state: &State,
    conversation_id: Uuid,
    at: (i64, i64),
    recipients: Option<Vec<Uuid>>,
    frame: String,
) {
    publish(
        state,
        conversation_id,
        Vec::new(),
        (Some(at.0), Some(at.1)),
        None,
        recipients,
        frame,
    );
}

/// Queues a frame about message `seq` that is not a stored change (no revision, so not
/// ordered with them): delivered to the participants who can see that message.
pub fn publish_seen_frame(state: &State, conversation_id: Uuid, seq: i64, frame: String) {
    publish(
        state,
        conversation_id,
        Vec::new(),
        (Some(seq), None),
        None,
        None,
        frame,
    );
}

/// Queues the frames of a change to a reply at `(seq, rev)` whose recipients the listeners
/// look up: `frame` (with the quote) to those who can see the parent at `parent_seq`,
/// `blind_frame` (without it) to those who joined after the parent.
pub fn publish_split_frames(
    state: &State,
    conversation_id: Uuid,
    at: (i64, i64),
    parent_seq: i64,
    frame: String,
    blind_frame: String,
) {
    publish(
        state,
        conversation_id,
        Vec::new(),
        (Some(parent_seq), Some(at.1)),
        None,
        None,
        frame,
    );
    publish(
        state,
        conversation_id,
        Vec::new(),
        (Some(at.0), Some(at.1)),
        Some(parent_seq),
        None,
        blind_frame,
    );
}

fn publish(
    state: &State,
    conversation_id: Uuid,
    exclude: Vec<Uuid>,
    (seq, rev): (Option<i64>, Option<i64>),
    joined_after: Option<i64>,
    recipients: Option<Vec<Uuid>>,
    frame: String,
) {
    match serde_json::value::RawValue::from_string(frame) {
        Ok(frame) => state.publisher.publish(BusEvent::Conversation {
            conversation_id,
            exclude,
            message_seq: seq,
            joined_after,
            rev,
            recipients,
            trace: crate::platform::bus::current_traceparent(),
            at_us: Some(chrono::Utc::now().timestamp_micros()),
            frame,
        }),
        Err(e) => tracing::error!(error = %e, "server frame is not JSON"),
    }
}

/// Queues a frame for the listed users only (for example one just removed from the
/// conversation, who no longer receives its events).
pub fn publish_to_users(state: &State, user_ids: Vec<Uuid>, frame: String) {
    match serde_json::value::RawValue::from_string(frame) {
        Ok(frame) => state.publisher.publish(BusEvent::Users { user_ids, frame }),
        Err(e) => tracing::error!(error = %e, "server frame is not JSON"),
    }
}

/// Queues a `message.*` event for the conversation's sockets; a frame too large for NOTIFY
/// goes by reference and receivers load it.
pub fn publish_message(state: &State, kind: MessageEvent, message: &Message) {
    publish_message_to(state, kind, message, None);
}

/// [`publish_message`] for a message whose [`Audience`] is known (from [`append_for`]). A
/// reply's quote reaches only those who can see its parent: the others get the frame
/// without it (issue 14).
pub fn publish_message_to(
    state: &State,
    kind: MessageEvent,
    message: &Message,
    audience: Option<Audience>,
) {
    let frame = message_frame(kind, message);
    if frame.len() + 200 > MAX_PAYLOAD {
        state.publisher.publish(BusEvent::MessageRef {
            conversation_id: message.conversation_id,
            message_id: message.id,
            event: kind,
        });
        return;
    }
    let at = (message.seq, message.rev);
    let Some(parent_seq) = message.quote.as_ref().map(|q| q.seq) else {
        let all = audience.map(|a| a.all);
        publish_message_frame(state, message.conversation_id, at, all, frame);
        return;
    };
    let blind_frame = message_frame(kind, &message.clone().seen_from(parent_seq + 1));
    match audience {
        Some(Audience { all, quote_blind }) => {
            let seeing: Vec<Uuid> = all
                .into_iter()
                .filter(|u| !quote_blind.contains(u))
                .collect();
            publish_message_frame(state, message.conversation_id, at, Some(seeing), frame);
            if !quote_blind.is_empty() {
                publish_message_frame(
                    state,
                    message.conversation_id,
                    at,
                    Some(quote_blind),
                    blind_frame,
                );
            }
        }
        None => {
            // The listeners look the recipients up: those who see the parent, and those
            // who joined after it.
            publish_split_frames(
                state,
                message.conversation_id,
                at,
                parent_seq,
                frame,
                blind_frame,
            );
        }
    }
}

/// The server frame of a `message.*` event.
pub fn message_frame(kind: MessageEvent, message: &Message) -> String {
    ServerFrame {
        rev: Some(message.rev),
        ..ServerFrame::of(message.conversation_id, kind.event(message.clone()))
            .at(Some(message.seq))
    }
    .to_json()
}
