//! The notification worker (issue 19): every messaging instance runs one. Each pass takes
//! the due rows of `messaging.notify_queue` (written in the transaction that appended or
//! edited the message; `FOR UPDATE SKIP LOCKED`, so instances never take the same row) and,
//! in the same statement, writes the feed entries the messages call for and deletes the
//! rows — one transaction, so a crash leaves either nothing done or everything (and the
//! feed's unique key makes a message tell each user at most once). The entries then go out
//! live as `notification` events to their users' sockets.
//!
//! Who is told: a current participant other than the sender who could see the message
//! (joined before it).
//! - The feed: when it mentions them (`@username`, or `@all` in a group); an entry for a
//!   message they had read already is written read. Mutes and levels do not apply.
//! - Nothing at all from someone they block (issue 20); an `urgent` message notifies by push
//!   and digest whatever the level and mute (quiet hours still hold).
//! - A push to each of their subscriptions (`messaging.push_deliveries`, sent by
//!   [`super::push`]): when the conversation's level says so (`all`, or `mentions` and it
//!   mentions them; the conversation's own level, else their default for its kind), it is
//!   not muted, they have not read it, push is on, it is not their quiet hours (in their time
//!   zone), and they are offline (no socket on any instance, past the presence grace).
//! - A digest (`messaging.email_digests`, mailed by [`super::digest`] after
//!   `EMAIL_DIGEST_DELAY_SECS`): on the same level and mute, with mail on; one row per user
//!   and conversation, widened by later messages, so one mail covers the window.

use std::time::Duration;

use super::super::{
    protocol::{Event, ServerFrame},
    publish::publish_to_users,
    State,
};
use super::{
    feed::{Notification, NOTIFICATION_COLUMNS},
    preferences::QUIET_NOW,
};
use crate::platform::{db::Traced, error::ApiError, tasks::Tasks};

/// Queue rows one pass takes at most.
pub const BATCH: i64 = 200;

/// Takes the due queue rows (at most `{batch}`, [`BATCH`]; oldest message first: its id is a
/// UUIDv7, so the primary key orders them), writes their feed entries, push
/// deliveries and digests (due `{delay}` seconds from now, `EMAIL_DIGEST_DELAY_SECS`),
/// deletes the rows. Both are literals, not parameters: PostgreSQL plans a prepared
/// statement without parameters once per connection (its one plan), while one with
/// parameters gets a custom plan at each of its first five executions and afterwards
/// whenever the generic plan's estimate costs more (PREPARE's notes, `plan_cache_mode`) —
/// for this statement 1.5–2.4 ms of planning for 0.25–0.36 ms of execution (EXPLAIN ANALYZE,
/// 2nd to 6th execution), at several passes a second on each instance under load; a send
/// profile had 2.5 % of its CPU samples in planning such CTEs before, 1.96 % after (perf,
/// short runs). Digests are upserted in key order:
/// two passes (one per instance) that claimed different messages of the same conversation
/// share digest rows, and upserting them in whatever order the grouping produced deadlocked
/// (six times in a benchmark run, each holding the other pass for `deadlock_timeout`, 1 s);
/// in one order the second pass waits for the first instead.
/// One row per new entry (with [`NOTIFICATION_COLUMNS`] and the recipient `user_id`), or a
/// single row of NULLs; `claimed` on every row: how many queue rows were taken.
const PASS: &str = "
WITH claimed AS (
    DELETE FROM messaging.notify_queue q
    WHERE q.message_id IN (
        SELECT message_id FROM messaging.notify_queue
        WHERE due_at <= now() ORDER BY message_id LIMIT {batch} FOR UPDATE SKIP LOCKED)
    RETURNING q.message_id
), recipients AS (
    SELECT m.id AS message_id, m.conversation_id, m.seq, m.sender_id, p.user_id,
           p.last_read_seq >= m.seq AS seen,
           (p.user_id = ANY (m.mentions) OR m.mentions_all) AS mentioned,
           coalesce(p.notify_level,
                    CASE WHEN c.is_group THEN s.group_level ELSE s.direct_level END,
                    CASE WHEN c.is_group THEN 'mentions' ELSE 'all' END) AS level,
           coalesce(p.muted_until > now(), false) AS muted,
           coalesce(s.push, true) AS push_on,
           coalesce(s.email, true) AS email_on,
           {quiet} AS quiet,
           coalesce(pr.online, false) AS online,
           m.priority = 'urgent' AS urgent,
           EXISTS (SELECT 1 FROM messaging.blocks b
                   WHERE b.blocker_id = p.user_id AND b.blocked_id = m.sender_id) AS blocks_sender
    FROM claimed cl
    JOIN messaging.messages m ON m.id = cl.message_id AND m.deleted_at IS NULL
     AND m.kind <> 'system'
    JOIN messaging.conversations c ON c.id = m.conversation_id
    JOIN messaging.participants p ON p.conversation_id = m.conversation_id
     AND p.left_at IS NULL AND p.visible_from_seq <= m.seq
     AND p.user_id IS DISTINCT FROM m.sender_id
    LEFT JOIN messaging.notification_settings s ON s.user_id = p.user_id
    LEFT JOIN messaging.presence pr ON pr.user_id = p.user_id
), pushed AS (
    INSERT INTO messaging.push_deliveries (message_id, subscription_id, user_id)
    SELECT r.message_id, ps.id, r.user_id
    FROM recipients r
    JOIN messaging.push_subscriptions ps ON ps.user_id = r.user_id
    WHERE NOT r.seen AND NOT r.blocks_sender AND r.push_on AND NOT r.quiet AND NOT r.online
      AND (r.urgent
           OR (NOT r.muted AND (r.level = 'all' OR (r.level = 'mentions' AND r.mentioned))))
    ON CONFLICT (message_id, subscription_id) DO NOTHING
), digested AS (
    INSERT INTO messaging.email_digests AS d (user_id, conversation_id, first_seq, last_seq, due_at)
    SELECT r.user_id, r.conversation_id, min(r.seq), max(r.seq),
           now() + make_interval(secs => {delay})
    FROM recipients r
    WHERE NOT r.seen AND NOT r.blocks_sender AND r.email_on
      AND (r.urgent
           OR (NOT r.muted AND (r.level = 'all' OR (r.level = 'mentions' AND r.mentioned))))
    GROUP BY r.user_id, r.conversation_id
    ORDER BY r.user_id, r.conversation_id
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET
        first_seq = LEAST(d.first_seq, EXCLUDED.first_seq),
        last_seq = GREATEST(d.last_seq, EXCLUDED.last_seq)
), written AS (
    INSERT INTO messaging.notifications
        (user_id, kind, conversation_id, message_id, seq, actor_id, read_at)
    SELECT r.user_id, 'mention', r.conversation_id, r.message_id, r.seq,
           r.sender_id, CASE WHEN r.seen THEN now() END
    FROM recipients r
    WHERE r.mentioned AND NOT r.blocks_sender
    ON CONFLICT (user_id, message_id, kind) DO NOTHING
    RETURNING *
)
SELECT (SELECT count(*) FROM claimed) AS claimed, n.user_id, {columns}
FROM (SELECT 1) one
LEFT JOIN written n ON true
LEFT JOIN messaging.messages m ON m.id = n.message_id";

/// How often finished rows are swept (see [`SWEEP`]).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Retention: finished push deliveries and sent digest mail after 7 days (a message can be
/// edited, and so queued again, for minutes only), feed entries and receipt times after 90 days; a bounded
/// number per statement, so a sweep never holds long locks (repeated while it finds a full
/// batch, [`SWEEP_ROUNDS`] at most).
const SWEEP: [&str; 4] = [
    "DELETE FROM messaging.push_deliveries WHERE ctid IN (
         SELECT ctid FROM messaging.push_deliveries
         WHERE state <> 'pending' AND updated_at < now() - interval '7 days' LIMIT 1000)",
    "DELETE FROM messaging.mail_outbox WHERE ctid IN (
         SELECT ctid FROM messaging.mail_outbox
         WHERE sent_at < now() - interval '7 days' LIMIT 1000)",
    "DELETE FROM messaging.receipt_marks WHERE ctid IN (
         SELECT ctid FROM messaging.receipt_marks
         WHERE at < now() - interval '90 days' LIMIT 1000)",
    "DELETE FROM messaging.notifications WHERE ctid IN (
         SELECT ctid FROM messaging.notifications
         WHERE created_at < now() - interval '90 days' LIMIT 1000)",
];

/// Starts the worker: a pass every `poll`, and again at once while passes find a full
/// batch, with a retention sweep every minute. A failed pass (the primary away) is logged
/// and tried at the next tick.
pub fn spawn(state: State, poll: Duration, tasks: &Tasks) {
    // Whole seconds (the setting is), as an integer literal.
    let delay = state.cfg.email_digest_delay.as_secs();
    let sql = PASS
        .replace("{columns}", NOTIFICATION_COLUMNS)
        .replace("{quiet}", QUIET_NOW)
        .replace("{batch}", &BATCH.to_string())
        .replace("{delay}", &delay.to_string());
    tasks.spawn("notification worker", async move {
        let mut swept = tokio::time::Instant::now();
        loop {
            if swept.elapsed() >= SWEEP_EVERY {
                swept = tokio::time::Instant::now();
                if let Err(e) = sweep(&state).await {
                    tracing::warn!(error = %e, "notification sweep failed");
                }
            }
            loop {
                match pass(&state, &sql).await {
                    Ok(claimed) if claimed >= BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "notification pass failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    });
}

/// Statements of one table a sweep runs at most (1000 rows each): enough to keep up with
/// 100 000 expiring rows a minute, without one sweep running unbounded.
const SWEEP_ROUNDS: usize = 100;

async fn sweep(state: &State) -> Result<(), ApiError> {
    let conn = state.db.primary().await?;
    for statement in SWEEP {
        // Again while a statement finds a full batch: what expires faster than a batch a
        // minute (receipt times in a busy group) is still swept.
        for _ in 0..SWEEP_ROUNDS {
            if conn.execute_t(statement, &[]).await? < 1000 {
                break;
            }
        }
    }
    Ok(())
}

/// One pass; returns how many queue rows it took.
async fn pass(state: &State, sql: &str) -> Result<i64, ApiError> {
    let conn = state.db.primary().await?;
    let rows = conn.query_t(sql, &[]).await?;
    let claimed = rows
        .first()
        .map(|r| r.get::<_, i64>("claimed"))
        .unwrap_or(0);
    for row in &rows {
        let Some(user_id) = row.get::<_, Option<uuid::Uuid>>("user_id") else {
            continue;
        };
        let entry = Notification::from_row(row);
        let frame = ServerFrame::of(entry.conversation_id, Event::Notification(entry));
        publish_to_users(state, vec![user_id], frame.to_json());
    }
    if claimed > 0 {
        tracing::debug!(claimed, entries = rows.len(), "notification pass");
    }
    Ok(claimed)
}
