//! Ordered, gapless delivery on one socket: every stored change carries the conversation's
//! revision (`rev`); the socket remembers the last revision it delivered per conversation,
//! drops anything not newer, and when a revision is skipped (a notification lost or
//! reordered between instances) fetches what it missed from the primary before going on.
//! `resume` replays from a client's cursors the same way, inside one repeatable-read
//! snapshot, so events committed while it runs are neither lost nor doubled.

use crate::platform::db::Traced;
use std::{collections::HashMap, time::Duration};

use uuid::Uuid;

use super::{error_frame, Socket};
use crate::{
    messaging::protocol::MAX_RESUME_CONVERSATIONS,
    messaging::{
        budget::{self, Budget},
        model::{message_columns_seen_from, my_reactions_column, Message, MESSAGE_FROM},
        protocol::{Detail, Event, MessageEvent, Resumed, ServerFrame},
        publish::message_frame,
        visibility::scope,
    },
    platform::error::ApiError,
    realtime::hub::Frame,
};

/// `resume.reload` for a conversation with more than `max` changes to replay.
fn reload_frame(conversation_id: Uuid, max: i64) -> String {
    ServerFrame::of(
        conversation_id,
        Event::ResumeReload(Detail {
            detail: format!(
                "more than {max} changes to replay; fetch history over HTTP and resume from its newest seq"
            ),
        }),
    )
    .to_json()
}

impl Socket {
    /// Delivers a live frame; stored changes only in revision order, once, catching up from
    /// the database over any revision skipped.
    pub(super) async fn deliver(&mut self, frame: Frame) -> bool {
        if let Some(at) = frame.committed_us {
            let delay = chrono::Utc::now().timestamp_micros() - at;
            crate::platform::metrics::observe_fanout_delay(delay.max(0) as f64 / 1e6);
        }
        let Some((conversation_id, rev)) = frame.at else {
            return self.send(frame.text.to_string()).await;
        };
        match self.synced.get(&conversation_id).copied() {
            // First change seen in a conversation joined since the socket opened.
            None => {
                self.synced.insert(conversation_id, rev);
                self.send(frame.text.to_string()).await
            }
            Some(last) if rev <= last => true,
            Some(last) if rev == last + 1 => {
                self.synced.insert(conversation_id, rev);
                self.send(frame.text.to_string()).await
            }
            Some(last) => {
                tracing::debug!(conversation.id = %conversation_id, last, rev, "revision gap; catching up");
                match self.catch_up_live(conversation_id, last).await {
                    Ok((keep, _)) => keep,
                    Err(e) => {
                        tracing::warn!(error = %e, "catch-up failed; delivering live");
                        self.synced.insert(conversation_id, rev);
                        self.send(frame.text.to_string()).await
                    }
                }
            }
        }
    }

    /// [`Self::catch_up`] of live delivery (no resume cursor), at most `RESUME_MAX_EVENTS`.
    async fn catch_up_live(
        &mut self,
        conversation_id: Uuid,
        after_rev: i64,
    ) -> anyhow::Result<(bool, i64)> {
        let max = self.state.cfg.resume_max_events;
        self.catch_up(conversation_id, after_rev, None, max).await
    }

    /// After the LISTEN connection came back: catch up every conversation this socket follows.
    pub(super) async fn resync(&mut self) -> bool {
        let convs: Vec<(Uuid, i64)> = self.synced.iter().map(|(c, r)| (*c, *r)).collect();
        for (conversation_id, last) in convs {
            match self.catch_up_live(conversation_id, last).await {
                Ok((true, _)) => {}
                Ok((false, _)) => return false,
                Err(e) => tracing::warn!(error = %e, "resync failed"),
            }
        }
        true
    }

    /// Sends every change after revision `after_rev` that the user can see, in revision
    /// order — `message.created` for messages appended after it, `message.edited` or
    /// `message.deleted` (current state) for older ones — from one repeatable-read snapshot
    /// of the primary, then remembers the snapshot's revision. With `resume_seq`, ends with a
    /// `resumed` frame, or answers `resume.reload` when there are more than `max` changes.
    /// Returns whether the socket stays open, and how many rows it read.
    pub(super) async fn catch_up(
        &mut self,
        conversation_id: Uuid,
        after_rev: i64,
        resume_seq: Option<i64>,
        max: i64,
    ) -> anyhow::Result<(bool, i64)> {
        let mut conn = self.state.db.primary().await?;
        let tx = conn.snapshot().await?;
        let Some(scope) = scope(&tx, conversation_id, self.caller.user_id).await? else {
            self.synced.remove(&conversation_id);
            return Ok((true, 0));
        };
        // A former participant's replay ends at their departure: no later change (an edit of
        // an older message included) and no later revision number.
        let head = tx
            .query_one_t(
                "SELECT coalesce((SELECT d.created_rev FROM messaging.messages d
                                  WHERE d.conversation_id = c.id AND d.seq = $2),
                                 c.last_rev),
                        c.last_seq
                 FROM messaging.conversations c WHERE c.id = $1",
                &[&conversation_id, &scope.visible_to_seq],
            )
            .await?;
        let (last_rev, last_seq): (i64, i64) = (head.get(0), head.get(1));
        let rows = tx
            .query_t(
                &format!(
                    "SELECT {columns}, m.created_rev, {mine} FROM {MESSAGE_FROM}
                     WHERE m.conversation_id = $1 AND m.rev > $2 AND m.rev <= $6
                       AND m.seq >= $3 AND ($4::bigint IS NULL OR m.seq <= $4)
                     ORDER BY m.rev
                     LIMIT $5",
                    columns = message_columns_seen_from("$3"),
                    mine = my_reactions_column("$7"),
                ),
                &[
                    &conversation_id,
                    &after_rev,
                    &scope.visible_from_seq,
                    &scope.visible_to_seq,
                    &(max + 1),
                    &last_rev,
                    &self.caller.user_id,
                ],
            )
            .await?;
        tx.commit().await?;
        drop(conn);
        self.synced.insert(conversation_id, last_rev);
        if rows.len() as i64 > max {
            let read = rows.len() as i64;
            return Ok((self.send(reload_frame(conversation_id, max)).await, read));
        }
        for row in &rows {
            let message = scope.show(Message::from_row(row));
            let created_rev: i64 = row.get("created_rev");
            let kind = if created_rev > after_rev {
                MessageEvent::Created
            } else if message.deleted {
                MessageEvent::Deleted
            } else {
                MessageEvent::Edited
            };
            if !self.send(message_frame(kind, &message)).await {
                return Ok((false, rows.len() as i64));
            }
        }
        let sent = rows.len() as i64;
        if resume_seq.is_some() {
            let visible_last = scope.visible_to_seq.unwrap_or(last_seq);
            let frame = ServerFrame {
                rev: Some(last_rev),
                ..ServerFrame::of(
                    conversation_id,
                    Event::Resumed(Resumed {
                        last_seq: visible_last,
                    }),
                )
                .at(Some(visible_last))
            };
            return Ok((self.send(frame.to_json()).await, sent));
        }
        Ok((true, sent))
    }

    /// `resume`: replays each conversation from its cursor (the last message `seq` the client
    /// has; 0 for none). Bounded work: `WS_RESUMES_PER_MINUTE` frames per user (across
    /// sockets and instances), and `RESUME_MAX_EVENTS_PER_FRAME` rows read in all (the
    /// conversations past that budget are answered `resume.reload` without being read).
    pub(super) async fn resume(&mut self, cursors: HashMap<Uuid, i64>) -> bool {
        let per_minute = self.state.cfg.ws_resumes_per_minute;
        let spent = match self.state.db.primary().await {
            Ok(conn) => {
                budget::spend(
                    &conn,
                    self.caller.user_id,
                    Budget::Resume,
                    1,
                    i64::from(per_minute),
                    Duration::from_secs(60),
                    || {
                        format!(
                            "at most {per_minute} resume frames per minute; wait, or fetch history over HTTP"
                        )
                    },
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        match spent {
            Ok(()) => {}
            Err(ApiError::TooManyRequests { detail, .. }) => {
                return self.send(error_frame(&detail)).await
            }
            Err(_) => return self.send(error_frame("resume failed; try again")).await,
        }
        if cursors.len() > MAX_RESUME_CONVERSATIONS {
            return self
                .send(error_frame(&format!(
                    "resume names at most {MAX_RESUME_CONVERSATIONS} conversations"
                )))
                .await;
        }
        let mut budget = self.state.cfg.resume_max_events_per_frame;
        for (conversation_id, seq) in cursors {
            let base = self.cursor_rev(conversation_id, seq).await;
            let max = budget.min(self.state.cfg.resume_max_events).max(0);
            let ok = match base {
                // The frame's budget is spent: no more reading, the rest reload over HTTP.
                Ok(Ok(_)) if max == 0 => self.send(reload_frame(conversation_id, 0)).await,
                Ok(Ok(rev)) => match self.catch_up(conversation_id, rev, Some(seq), max).await {
                    Ok((ok, read)) => {
                        budget -= read;
                        ok
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "resume failed");
                        self.send(error_frame("resume failed; try again")).await
                    }
                },
                Ok(Err(detail)) => {
                    let frame = ServerFrame::of(
                        conversation_id,
                        Event::Error(Detail {
                            detail: detail.to_owned(),
                        }),
                    );
                    self.send(frame.to_json()).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resume failed");
                    self.send(error_frame("resume failed; try again")).await
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// The revision at which message `seq` was appended (0 for seq 0), or why the cursor is
    /// refused.
    pub(super) async fn cursor_rev(
        &self,
        conversation_id: Uuid,
        seq: i64,
    ) -> anyhow::Result<Result<i64, &'static str>> {
        if seq < 0 {
            return Ok(Err("a resume cursor is a seq, zero or more"));
        }
        let conn = self.state.db.primary().await?;
        if scope(&conn, conversation_id, self.caller.user_id)
            .await?
            .is_none()
        {
            return Ok(Err("conversation not found"));
        }
        if seq == 0 {
            return Ok(Ok(0));
        }
        let row = conn
            .query_opt_t(
                "SELECT created_rev FROM messaging.messages WHERE conversation_id = $1 AND seq = $2",
                &[&conversation_id, &seq],
            )
            .await?;
        Ok(row
            .map(|r| r.get(0))
            .ok_or("the cursor is past the conversation's last seq"))
    }
}
