//! The delivered marker (issue 20): beside the read marker, every `seq` up to it reached one
//! of the participant's devices — acknowledged over the socket (`{type:"delivered"}`), or
//! fetched in a history page. It only moves forward, never past the last message, and the
//! read marker carries it along (reading implies delivery). Each move is announced as a
//! `delivered` event and timed in `messaging.receipt_marks` (migrations/messaging V10), so
//! receipts say when ([`super::receipts`]).

use uuid::Uuid;

use super::{
    protocol::{Event, ServerFrame},
    publish::publish_frame,
    State,
};
use crate::platform::{db::Traced, error::ApiError};

/// `delivered`'s data: a participant's delivered marker moved.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveredMoved {
    pub user_id: Uuid,
    pub last_delivered_seq: i64,
}

/// Moves `user_id`'s delivered marker in `conversation_id` forward to `seq` (at most the
/// last message), timing the move and announcing it when it moved. Returns the marker.
///
/// Errors: 404 unless `user_id` is a current participant.
pub async fn mark_delivered(
    state: &State,
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
    seq: i64,
) -> Result<i64, ApiError> {
    let row = db
        .query_opt_t(
            "WITH old AS (
                 SELECT last_delivered_seq FROM messaging.participants
                 WHERE conversation_id = $1 AND user_id = $2 AND left_at IS NULL FOR UPDATE
             ), moved AS (
                 UPDATE messaging.participants p
                 SET last_delivered_seq = GREATEST(p.last_delivered_seq, LEAST($3, c.last_seq))
                 FROM messaging.conversations c, old
                 WHERE c.id = p.conversation_id AND p.conversation_id = $1 AND p.user_id = $2
                 RETURNING p.last_delivered_seq
             ), timed AS (
                 INSERT INTO messaging.receipt_marks (conversation_id, user_id, kind, seq)
                 SELECT $1, $2, 'delivered', moved.last_delivered_seq FROM moved, old
                 WHERE moved.last_delivered_seq > old.last_delivered_seq
                 ON CONFLICT DO NOTHING
             )
             SELECT moved.last_delivered_seq, old.last_delivered_seq FROM moved, old",
            &[&conversation_id, &user_id, &seq],
        )
        .await?
        .ok_or_else(super::visibility::conversation_not_found)?;
    let (now, before): (i64, i64) = (row.get(0), row.get(1));
    if now > before {
        let frame = ServerFrame::of(
            conversation_id,
            Event::Delivered(DeliveredMoved {
                user_id,
                last_delivered_seq: now,
            }),
        )
        .at(Some(now));
        publish_frame(state, conversation_id, None, frame.to_json());
    }
    Ok(now)
}
