//! Typing on one socket: ephemeral and never stored, checked against current membership at
//! every announcement, dropped at once when the membership ends.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Socket;
use crate::messaging::{
    protocol::{Event, ServerFrame, Typing},
    publish::publish_frame_except,
};
use crate::platform::db::Traced;

/// A refreshed `typing: true` is re-announced at most this often.
const TYPING_REANNOUNCE: Duration = Duration::from_secs(2);

impl Socket {
    /// The caller's membership of `conversation_id` ended: their typing there stops now
    /// (announced to the members, so it clears at once), and the socket follows the
    /// conversation no more.
    pub(super) fn left(&mut self, conversation_id: Uuid) {
        if let Some(t) = self.typing.remove(&conversation_id) {
            self.announce_typing(conversation_id, false, t.hidden);
        }
        self.synced.remove(&conversation_id);
    }

    /// Typing: ephemeral and never stored. `true` is announced, then re-announced at most
    /// every couple of seconds while refreshed; it expires `TYPING_TTL_SECS` after the last
    /// refresh (announced as `is_typing: false`), as does an explicit `false`. Every
    /// announcement of `true` is checked against current membership on the primary, so a
    /// removed member's typing reaches nobody (and their removal drops it at once, see
    /// [`Self::left`]).
    pub(super) async fn typing(
        &mut self,
        conversation_id: Uuid,
        is_typing: bool,
    ) -> Result<(), &'static str> {
        let now = Instant::now();
        if !is_typing {
            if let Some(t) = self.typing.remove(&conversation_id) {
                self.announce_typing(conversation_id, false, t.hidden);
            }
            return Ok(());
        }
        let ttl = self.state.cfg.typing_ttl;
        if let Some(state) = self.typing.get_mut(&conversation_id) {
            state.until = now + ttl;
            if now.duration_since(state.announced) < TYPING_REANNOUNCE {
                return Ok(());
            }
        }
        let audience = match self.state.db.primary().await {
            Ok(conn) => typing_audience(&conn, conversation_id, self.caller.user_id).await,
            Err(_) => return Err("service unavailable; try again"),
        };
        match audience {
            Ok(Some(hidden)) => {
                self.typing.insert(
                    conversation_id,
                    TypingState {
                        until: now + ttl,
                        announced: now,
                        hidden: hidden.clone(),
                    },
                );
                self.announce_typing(conversation_id, true, hidden);
                Ok(())
            }
            Ok(None) => {
                self.typing.remove(&conversation_id);
                Err("conversation not found")
            }
            Err(TypingRefused::ReadOnly) => {
                self.typing.remove(&conversation_id);
                Err("this conversation is read-only")
            }
            Err(TypingRefused::Unavailable) => Err("service unavailable; try again"),
        }
    }

    pub(super) fn expire_typing(&mut self) {
        let now = Instant::now();
        let expired: Vec<Uuid> = self
            .typing
            .iter()
            .filter(|(_, t)| t.until <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            if let Some(t) = self.typing.remove(&c) {
                self.announce_typing(c, false, t.hidden);
            }
        }
    }

    /// Announces the caller's typing to the conversation's participants, except themself and
    /// `hidden` (those they block).
    pub(super) fn announce_typing(
        &self,
        conversation_id: Uuid,
        is_typing: bool,
        mut hidden: Vec<Uuid>,
    ) {
        let frame = ServerFrame::of(
            conversation_id,
            Event::Typing(Typing {
                user_id: self.caller.user_id,
                is_typing,
                expires_in: is_typing.then(|| self.state.cfg.typing_ttl.as_secs_f64()),
            }),
        );
        hidden.push(self.caller.user_id);
        publish_frame_except(&self.state, conversation_id, hidden, frame.to_json());
    }
}

/// One conversation's typing on this socket.
pub(super) struct TypingState {
    /// When it expires unless refreshed.
    pub until: Instant,
    /// When `true` was last announced.
    pub announced: Instant,
    /// Participants the typist blocks: their typing never reaches them.
    pub hidden: Vec<Uuid>,
}

enum TypingRefused {
    ReadOnly,
    Unavailable,
}

/// Who must not see `user_id` typing in `conversation_id` (the participants they block), or
/// `None` when they are not a current participant.
///
/// Errors: [`TypingRefused::ReadOnly`] in a direct conversation a block made read-only.
async fn typing_audience(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Vec<Uuid>>, TypingRefused> {
    let row = db
        .query_opt_t(
            "SELECT c.blocked, ARRAY(
                 SELECT b.blocked_id FROM messaging.blocks b
                 JOIN messaging.participants o
                   ON o.conversation_id = c.id AND o.user_id = b.blocked_id AND o.left_at IS NULL
                 WHERE b.blocker_id = $2) AS hidden
             FROM messaging.conversations c
             JOIN messaging.participants p ON p.conversation_id = c.id
             WHERE c.id = $1 AND p.user_id = $2 AND p.left_at IS NULL",
            &[&conversation_id, &user_id],
        )
        .await
        .map_err(|_| TypingRefused::Unavailable)?;
    match row {
        None => Ok(None),
        Some(r) if r.get::<_, bool>(0) => Err(TypingRefused::ReadOnly),
        Some(r) => Ok(Some(r.get(1))),
    }
}
