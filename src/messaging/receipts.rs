//! Receipts of a message — sent, delivered, read per participant — derived from the read
//! and delivered markers (no per-message rows), with the times from the markers' moves
//! (`messaging.receipt_marks`, see [`super::delivered`]).

use crate::platform::db::Traced;
use actix_web::{
    web::{self, Path},
    HttpResponse,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{caller::Caller, consistency::Consistency, model, visibility::visible_message, State};
use crate::platform::error::ApiError;

/// One reader in a receipts answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Reader {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
}

/// How far a message got with one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptState {
    Sent,
    Delivered,
    Read,
}

/// One participant's receipt: the state, and when it was delivered and read (null when not
/// yet, or no longer known: times are kept 90 days).
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberReceipt {
    #[serde(flatten)]
    pub reader: Reader,
    pub state: ReceiptState,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
}

/// `GET /api/messages/{id}/receipts` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Receipts {
    pub message_id: Uuid,
    pub seq: i64,
    pub read_by: Vec<Reader>,
    pub not_read_by: Vec<Reader>,
    /// Every participant but the sender, with state and times, by username.
    pub members: Vec<MemberReceipt>,
}

impl Reader {
    fn same(&self) -> Self {
        Self {
            user_id: self.user_id,
            username: self.username.clone(),
            display_name: self.display_name.clone(),
        }
    }
}

/// `GET /api/messages/{id}/receipts`: how far the message got with each current participant
/// (the sender aside): `sent`, `delivered` (their delivered marker ≥ its `seq`) or `read`
/// (their read marker ≥ it), with the times; `read_by`/`not_read_by` list the same readers
/// by reading alone. 404 if the caller cannot see the message; a former participant gets the
/// receipts as they stood at their departure, without times. Served by the replica.
#[utoipa::path(get, path = "/api/messages/{id}/receipts", tag = "messages", params(("id" = Uuid, Path, description = "message id")),
    responses((status = 200, description = "Who has and has not read it.", body = Receipts)))]
pub async fn receipts(
    state: web::Data<State>,
    caller: Caller,
    consistency: Consistency,
    id: Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let (id, user) = (id.into_inner(), caller.user_id);
    let (message, readers) = state
        .db
        .reading::<_, ApiError, _>(consistency.0, move |conn| {
            Box::pin(async move {
                let (message, scope) = visible_message(conn, id, user).await?;
                // A former participant sees the receipts as they stood at their departure.
                if !scope.current() {
                    let readers = model::left_roster(conn, message.conversation_id, user)
                        .await?
                        .into_iter()
                        .filter(|r| Some(r.user_id) != message.sender_id)
                        .map(|r| {
                            let read = r.last_read_seq >= message.seq;
                            let delivered = read || r.last_delivered_seq >= message.seq;
                            (
                                Reader {
                                    user_id: r.user_id,
                                    username: r.username,
                                    display_name: r.display_name,
                                },
                                state_of(read, delivered),
                                None,
                                None,
                            )
                        })
                        .collect::<Vec<_>>();
                    return Ok((message, readers));
                }
                let rows = conn
                    .query_t(
                        "SELECT p.user_id, u.username, u.display_name,
                                p.last_read_seq >= $2 AS has_read,
                                p.last_delivered_seq >= $2 AS has_delivered,
                                (SELECT r.at FROM messaging.receipt_marks r
                                 WHERE r.conversation_id = $1 AND r.user_id = p.user_id
                                   AND r.kind = 'read' AND r.seq >= $2
                                 ORDER BY r.seq LIMIT 1) AS read_at,
                                (SELECT r.at FROM messaging.receipt_marks r
                                 WHERE r.conversation_id = $1 AND r.user_id = p.user_id
                                   AND r.kind = 'delivered' AND r.seq >= $2
                                 ORDER BY r.seq LIMIT 1) AS delivered_at
                         FROM messaging.participants p
                         LEFT JOIN auth.public_profiles u ON u.id = p.user_id
                         WHERE p.conversation_id = $1 AND p.left_at IS NULL
                           AND p.user_id IS DISTINCT FROM $3
                         ORDER BY u.username",
                        &[&message.conversation_id, &message.seq, &message.sender_id],
                    )
                    .await?;
                let readers = rows
                    .iter()
                    .map(|r| {
                        let read_at: Option<DateTime<Utc>> = r.get(5);
                        let delivered_at: Option<DateTime<Utc>> = r.get(6);
                        (
                            Reader {
                                user_id: r.get(0),
                                username: r.get(1),
                                display_name: r.get(2),
                            },
                            state_of(r.get(3), r.get(4)),
                            // Reading implies delivery: delivered no later than read.
                            match (delivered_at, read_at) {
                                (Some(d), Some(r)) => Some(d.min(r)),
                                (d, r) => d.or(r),
                            },
                            read_at,
                        )
                    })
                    .collect::<Vec<_>>();
                Ok((message, readers))
            })
        })
        .await?;
    let (mut read_by, mut not_read_by, mut members) = (Vec::new(), Vec::new(), Vec::new());
    for (reader, state, delivered_at, read_at) in readers {
        if state == ReceiptState::Read {
            read_by.push(reader.same());
        } else {
            not_read_by.push(reader.same());
        }
        members.push(MemberReceipt {
            reader,
            state,
            delivered_at,
            read_at,
        });
    }
    Ok(HttpResponse::Ok().json(Receipts {
        message_id: message.id,
        seq: message.seq,
        read_by,
        not_read_by,
        members,
    }))
}

fn state_of(read: bool, delivered: bool) -> ReceiptState {
    if read {
        ReceiptState::Read
    } else if delivered {
        ReceiptState::Delivered
    } else {
        ReceiptState::Sent
    }
}
