//! Group management (DESIGN.md §3): who is in a group ([`membership`]: add, remove, leave)
//! and what it is called and who runs it ([`roles`]: rename, promote, demote). Every change
//! is a `system` message in history, so it has a `seq` like everything else, and is
//! announced live. Admin-only actions answer 403 to members; all answer 404 to
//! non-participants and 422 on a direct conversation. This file holds what they share.

pub mod membership;
pub mod roles;

use crate::platform::db::{Conn, Traced, Tx};
use std::collections::HashMap;

use actix_web::{http::StatusCode, HttpResponse};

use uuid::Uuid;

use super::{
    append::{append, NewMessage},
    consistency,
    domain::{MessageKind, SystemRecord},
    events::BusEvent,
    model::{load_conversation, load_conversation_for, Message},
    protocol::{ConversationChanged, Event, MessageEvent, ServerFrame},
    publish::{message_frame, publish_frame, publish_message, publish_to_users},
    visibility::{self, Scope},
    State,
};
use crate::platform::error::ApiError;

/// Locks the conversation row (serialising membership changes, so two admins cannot demote
/// each other into a group with none) and returns the caller's scope as of now.
///
/// Errors: 404 unless a current participant; 422 for a direct conversation.
pub(crate) async fn lock(
    tx: &Tx<'_>,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Scope, ApiError> {
    tx.execute_t(
        "SELECT 1 FROM messaging.conversations WHERE id = $1 FOR NO KEY UPDATE",
        &[&conversation_id],
    )
    .await?;
    let scope = visibility::current_scope(tx, conversation_id, user_id).await?;
    if !scope.is_group {
        return Err(ApiError::invalid_field(
            "conversation",
            "a direct conversation has exactly two participants and no name or roles",
        ));
    }
    Ok(scope)
}

/// Errors: 403 unless `scope` is a group admin's.
pub(crate) fn require_admin(scope: &Scope) -> Result<(), ApiError> {
    if scope.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only a group admin can do that".into()))
    }
}

async fn usernames(db: &impl Traced, ids: &[Uuid]) -> Result<HashMap<Uuid, String>, ApiError> {
    let rows = db
        .query_t(
            "SELECT id, username FROM auth.public_profiles WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn name_of(names: &HashMap<Uuid, String>, id: Uuid) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| "someone".to_owned())
}

/// Appends a system message recording `record` (its `actor_id`, `None` for the service
/// itself, is the message's sender).
async fn system(
    tx: &Tx<'_>,
    conversation_id: Uuid,
    text: &str,
    record: SystemRecord,
) -> Result<Message, ApiError> {
    append(
        tx,
        conversation_id,
        NewMessage {
            kind: MessageKind::System,
            sender_id: record.actor_id,
            content: Some(text),
            meta: Some(record.to_meta()),
            ..NewMessage::default()
        },
    )
    .await
}

/// After commit: announce the system messages and an extra event to the conversation, and
/// to `also` (users whose membership just ended, no longer reached through it) the first
/// message only — their departure, the last thing they may see — and the extra event. Their
/// sockets are told the membership ended, so they drop its typing state at once.
fn announce(
    state: &State,
    conversation_id: Uuid,
    messages: &[Message],
    event: Event,
    also: Vec<Uuid>,
) {
    if !also.is_empty() {
        state.publisher.publish(BusEvent::MembershipEnded {
            conversation_id,
            user_ids: also.clone(),
        });
    }
    let frame = |last: Option<&Message>| {
        ServerFrame::of(conversation_id, event.clone())
            .at(last.map(|m| m.seq))
            .to_json()
    };
    for m in messages {
        publish_message(state, MessageEvent::Created, m);
    }
    publish_frame(state, conversation_id, None, frame(messages.last()));
    if let (false, Some(departure)) = (also.is_empty(), messages.first()) {
        publish_to_users(
            state,
            also.clone(),
            message_frame(MessageEvent::Created, departure),
        );
        publish_to_users(state, also, frame(Some(departure)));
    }
}

/// After a committed rename or role change: announces the system message and
/// `conversation.updated`, and answers with the conversation.
async fn updated(
    state: &State,
    conn: &Conn,
    message: Message,
    reader: Uuid,
) -> Result<HttpResponse, ApiError> {
    let conversation_id = message.conversation_id;
    let conversation = load_conversation(conn, conversation_id).await?;
    announce(
        state,
        conversation_id,
        &[message],
        Event::ConversationUpdated(ConversationChanged { conversation }),
        Vec::new(),
    );
    respond(state, conn, conversation_id, reader).await
}

/// The conversation's details as the answer to `reader`'s change, with the consistency token.
async fn respond(
    state: &State,
    conn: &Conn,
    conversation_id: Uuid,
    reader: Uuid,
) -> Result<HttpResponse, ApiError> {
    let conversation = load_conversation_for(conn, conversation_id, reader)
        .await?
        .ok_or_else(visibility::conversation_not_found)?;
    Ok(consistency::written(state, conn, StatusCode::OK)
        .await?
        .json(conversation))
}
