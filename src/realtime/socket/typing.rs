//! Typing on one socket: ephemeral and never stored, checked against current membership at
//! every announcement, dropped at once when the membership ends.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Socket;
use crate::messaging::{
    protocol::{Event, ServerFrame, Typing},
    publish::publish_frame,
    visibility::is_participant,
};

/// A refreshed `typing: true` is re-announced at most this often.
const TYPING_REANNOUNCE: Duration = Duration::from_secs(2);

impl Socket {
    /// The caller's membership of `conversation_id` ended: their typing there stops now
    /// (announced to the members, so it clears at once), and the socket follows the
    /// conversation no more.
    pub(super) fn left(&mut self, conversation_id: Uuid) {
        if self.typing.remove(&conversation_id).is_some() {
            self.announce_typing(conversation_id, false);
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
            if self.typing.remove(&conversation_id).is_some() {
                self.announce_typing(conversation_id, false);
            }
            return Ok(());
        }
        let ttl = self.state.cfg.typing_ttl;
        if let Some(state) = self.typing.get_mut(&conversation_id) {
            state.0 = now + ttl;
            if now.duration_since(state.1) < TYPING_REANNOUNCE {
                return Ok(());
            }
        }
        let member = match self.state.db.primary().await {
            Ok(conn) => is_participant(&conn, conversation_id, self.caller.user_id).await,
            Err(_) => return Err("service unavailable; try again"),
        };
        match member {
            Ok(true) => {
                self.typing.insert(conversation_id, (now + ttl, now));
                self.announce_typing(conversation_id, true);
                Ok(())
            }
            Ok(false) => {
                self.typing.remove(&conversation_id);
                Err("conversation not found")
            }
            Err(_) => Err("service unavailable; try again"),
        }
    }

    pub(super) fn expire_typing(&mut self) {
        let now = Instant::now();
        let expired: Vec<Uuid> = self
            .typing
            .iter()
            .filter(|(_, t)| t.0 <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            self.typing.remove(&c);
            self.announce_typing(c, false);
        }
    }

    pub(super) fn announce_typing(&self, conversation_id: Uuid, is_typing: bool) {
        let frame = ServerFrame::of(
            conversation_id,
            Event::Typing(Typing {
                user_id: self.caller.user_id,
                is_typing,
                expires_in: is_typing.then(|| self.state.cfg.typing_ttl.as_secs_f64()),
            }),
        );
        publish_frame(
            &self.state,
            conversation_id,
            Some(self.caller.user_id),
            frame.to_json(),
        );
    }
}
