//! Typing on one socket: ephemeral and never stored, checked against current membership at
//! every announcement, dropped at once when the membership ends.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Socket;
use crate::messaging::typing::{announce, audience, Refused};

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
            Ok(conn) => audience(&conn, conversation_id, self.caller.user_id).await,
            Err(_) => return Err("service unavailable; try again"),
        };
        match audience {
            Ok(Ok(hidden)) => {
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
            Ok(Err(Refused::NotFound)) => {
                self.typing.remove(&conversation_id);
                Err("conversation not found")
            }
            Ok(Err(Refused::ReadOnly)) => {
                self.typing.remove(&conversation_id);
                Err("this conversation is read-only")
            }
            Err(_) => Err("service unavailable; try again"),
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
        hidden: Vec<Uuid>,
    ) {
        announce(
            &self.state,
            conversation_id,
            self.caller.user_id,
            is_typing,
            hidden,
        );
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
