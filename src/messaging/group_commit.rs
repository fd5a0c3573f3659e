//! Group commit for sends: the concurrent `POST …/messages` of an instance are appended
//! together — one transaction, one multi-row statement, one WAL flush and one WAL position
//! for all of them — instead of one commit each.
//!
//! A handler submits its send to a bounded queue ([`SendQueue::submit`]). Admission control
//! ([`super::admission`]) refuses a send at once (503 with `Retry-After`) when the instance
//! already holds as many sends as the latency of recent batches allows, or its sender holds
//! half of that already: accepted sends keep their latency and the excess is told to come
//! back, instead of every send waiting behind queues that grow to their bounds.
//! `SEND_WRITERS` writer tasks each take what queued while they were busy (at most
//! `SEND_BATCH_MAX`; no timer waits for more) and append it:
//!
//! 1. `BEGIN`; the batch's conversations (those its senders are participants of: a
//!    stranger's send locks nothing) are locked `FOR NO KEY UPDATE` in id order, so batches
//!    on different instances never deadlock and each statement after the lock sees every
//!    earlier send to those conversations (READ COMMITTED takes a new snapshot per
//!    statement, PostgreSQL docs §13.2.1). Every change that needs a conversation's row
//!    lock takes this mode (an `UPDATE` of the row's non-key columns takes it too), so they
//!    exclude one another; it does not exclude the `FOR KEY SHARE` that a foreign-key check
//!    takes when a row referencing the conversation is inserted (docs §13.3.2): with
//!    `FOR UPDATE`, a batch and the notification worker's inserts (digests,
//!    notifications) waited on each other's row locks up to the other's commit, and a file
//!    upload (its attachment row, inserted before its chunks) held back every send to its
//!    conversation while the chunks were written;
//! 2. one statement ([`APPEND_BATCH`]) checks each send — the sender is a current
//!    participant of a conversation no block made read-only, its `client_id` is new here (a repeat is answered with the original),
//!    its `reply_to` (and thread root) is a message the sender can see, the sender's send budget has room
//!    (counted in queue order, exactly as one send at a time would) — and appends those that
//!    pass with gapless `seq`s in queue order, moving each sender's read marker; a second
//!    ([`QUEUE_NOTIFICATIONS`]) queues what it appended for the notification worker. A
//!    batch in which no send replies, replies in a thread or mentions anyone — most of
//!    them — runs the statement without those look-ups and records ([`APPEND_PLAIN_BATCH`],
//!    [`BatchShape`]), which costs the primary less;
//! 3. `COMMIT`, then `pg_current_wal_lsn()`: every send of the batch answers with that
//!    position as its consistency token.
//!
//! A send that fails a check fails alone. If the statement itself fails (a `client_id`
//! repeated on two instances at the same instant hits the unique index), each send of the
//! batch is retried as a batch of one, so one bad send never fails the others. If the
//! commit's outcome is unknown (the connection broke during it), every send of the batch is
//! answered 503 and never retried here: a client retrying with its `client_id` gets the
//! original if it was stored.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use super::{
    admission::{SendAdmission, Share, Taken},
    append::{Audience, AUDIENCE_COLUMNS, AUDIENCE_COLUMNS_WITHOUT_QUOTE},
    domain::MessageContent,
    mentions::{self, Mentions},
    model::{Message, MESSAGE_COLUMNS},
    visibility::conversation_not_found,
};
use crate::platform::{
    db::{Conn, DbError, Lsn, Routing, Traced},
    error::ApiError,
    tasks::Tasks,
};

/// A text message to append.
pub struct NewSend {
    pub conversation_id: Uuid,
    pub sender_id: Uuid,
    pub content: MessageContent,
    pub reply_to: Option<Uuid>,
    pub client_id: Option<String>,
    pub priority: super::domain::Priority,
    /// Reply in the thread of this message (its root, or a reply in it).
    pub thread_root: Option<Uuid>,
}

/// What became of a send.
pub enum Outcome {
    /// Appended: the message as its sender sees it, and who may see it (`None` past
    /// [`super::append::MAX_CARRIED_RECIPIENTS`]).
    Created {
        message: Box<Message>,
        audience: Option<Audience>,
        /// For a thread reply: its root's `seq` and summary right after it.
        thread: Option<(i64, super::model::ThreadSummary)>,
    },
    /// Its `client_id` was already used by this sender here: answer with that message.
    Repeated,
}

/// A send's result with the primary's WAL position after its batch committed.
pub struct Appended {
    pub outcome: Outcome,
    pub lsn: Lsn,
}

/// How sends are batched and limited.
#[derive(Clone, Debug)]
pub struct GroupCommitSettings {
    /// Sends held at most (queued or being appended), the ceiling of admission control's
    /// limit; past the limit a send answers 503 at once.
    pub queue_capacity: usize,
    /// The queueing delay admission control keeps sends to: how long a batch's oldest send
    /// had waited, from the edge, when its batch was taken, less the part of that wait the
    /// batch before it spent committing ([`SendAdmission::queueing_delay`]).
    pub max_wait: Duration,
    /// Sends in one batch at most.
    pub batch_max: usize,
    /// Batches in flight at once (each on its own connection).
    pub writers: usize,
    /// The send budget: sends per window per user.
    pub rate_limit: i64,
    pub rate_window: Duration,
    /// Whether every group member may mention all (`@all`), or only admins.
    pub mention_all_members: bool,
}

type Reply = oneshot::Sender<Result<Appended, ApiError>>;

/// Where a send's result goes: its handler's channel, and the sender's place in their share
/// of admission control's limit, given back as the result is sent (not when the whole batch
/// is done: a batch appended send by send after a failure takes a while).
struct Answer {
    reply: Reply,
    _share: Share,
}

impl Answer {
    /// Answers the send (its handler may be gone: the client left) and gives back the place.
    fn send(self, result: Result<Appended, ApiError>) {
        let _ = self.reply.send(result);
    }
}

struct Pending {
    send: NewSend,
    reply: Reply,
    /// The submitting request's `messaging.send_queue` span, which the batch links to.
    link: Option<opentelemetry::trace::SpanContext>,
    /// When the request reached the edge ([`crate::platform::queue_time::arrived_at`]): its
    /// queueing delay counts the wait before the handler too.
    arrived: Instant,
    /// When admission control let it in ([`SendAdmission::admit`]).
    admitted: Instant,
    /// Its place in its sender's share, given back once the send is answered.
    share: Share,
}

/// The instance's send queue; cheap to clone.
#[derive(Clone)]
pub struct SendQueue {
    tx: mpsc::Sender<Pending>,
    admission: Arc<SendAdmission>,
}

impl SendQueue {
    /// Starts `settings.writers` writer tasks appending through `db`'s primary.
    pub fn spawn(db: Arc<Routing>, settings: GroupCommitSettings, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let admission = Arc::new(SendAdmission::new(
            settings.queue_capacity,
            settings.max_wait,
        ));
        crate::platform::metrics::record_send_admission_limit(admission.limit());
        for _ in 0..settings.writers.max(1) {
            let (db, rx, settings, admission) =
                (db.clone(), rx.clone(), settings.clone(), admission.clone());
            // Never dropped in the middle of a batch (its connection would go back to the
            // pool inside a transaction): a writer stops between batches.
            let stopping = tasks.clone();
            tasks.spawn_graceful(async move {
                loop {
                    let batch = tokio::select! {
                        b = next_batch(&rx, settings.batch_max) => b,
                        _ = stopping.stopping() => None,
                    };
                    let Some(batch) = batch else { break };
                    let sends = batch.len();
                    // Arrival is at the edge, so the oldest need not be the first queued.
                    let oldest = batch.iter().map(|p| p.arrived).min();
                    let first_admitted = batch.iter().map(|p| p.admitted).min();
                    let taken_at = Instant::now();
                    if let (Some(oldest), Some(first_admitted)) = (oldest, first_admitted) {
                        admission.taken(&Taken {
                            sends,
                            waited: admission.queueing_delay(oldest, taken_at),
                            first_admitted,
                        });
                    }
                    // Given back even if the batch panics: a place never released would
                    // shrink the instance for good.
                    let _held = Held(&admission, sends);
                    if let Some((from, to)) = run_batch(&db, &settings, batch).await {
                        admission.appended(from, to);
                    }
                    crate::platform::metrics::record_send_admission_limit(admission.limit());
                }
            });
        }
        Self { tx, admission }
    }

    /// Queues `send`, whose request reached the edge at `arrived` (its queueing delay
    /// starts there), and waits for its batch.
    ///
    /// Errors: 503 with `Retry-After: 1` at once when the sender already holds their share
    /// of admission control's limit ([`SendAdmission::share`]), when the instance holds as
    /// many sends as it allows now ([`SendAdmission`]), or when the service is stopping; the
    /// send's own refusal (404 not a participant, 422 `reply_to`, 429 budget); 503 when the
    /// primary is unavailable.
    ///
    /// Traces: the wait is a `messaging.send_queue` span in the request's trace; the batch
    /// that appended it is a `messaging.group_commit` span (a trace of its own, holding the
    /// database spans) linked to every send's `messaging.send_queue` span.
    pub async fn submit(&self, send: NewSend, arrived: Instant) -> Result<Appended, ApiError> {
        use opentelemetry::trace::TraceContextExt;
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let refused = || {
            crate::platform::metrics::send_refused();
            ApiError::Unavailable {
                detail: "too many messages are being sent right now; retry shortly".into(),
                retry_after: 1,
            }
        };
        let share = self.admission.share(send.sender_id).ok_or_else(|| {
            crate::platform::metrics::send_share_refused();
            ApiError::Unavailable {
                detail: "you have too many messages being sent at once; retry shortly".into(),
                retry_after: 1,
            }
        })?;
        let admitted = self.admission.admit().ok_or_else(refused)?;
        let span = tracing::info_span!("messaging.send_queue", otel.kind = "internal");
        let link = Some(span.context().span().span_context().clone()).filter(|c| c.is_valid());
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            send,
            reply,
            link,
            arrived,
            admitted,
            share,
        };
        if self.tx.try_send(pending).is_err() {
            self.admission.release(1);
            return Err(refused());
        }
        answer
            .instrument(span)
            .await
            .map_err(|_| ApiError::Unavailable {
                detail: "the service is stopping; retry shortly".into(),
                retry_after: 1,
            })?
    }
}

/// The places of a batch's sends in admission control, given back when it is dropped.
struct Held<'a>(&'a SendAdmission, usize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Waits for one send, then takes whatever else is already queued, up to `max`.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Pending>>, max: usize) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max.min(64));
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Appends a batch and answers each of its sends; when its commit ran, if it was appended as
/// one ([`answer_batch`]).
async fn run_batch(
    db: &Routing,
    settings: &GroupCommitSettings,
    batch: Vec<Pending>,
) -> Option<Committed> {
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    crate::platform::metrics::observe_send_batch(batch.len());
    let span = tracing::info_span!(
        parent: None,
        "messaging.group_commit",
        otel.kind = "internal",
        sends = batch.len()
    );
    let mut sends = Vec::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    for p in batch {
        if let Some(link) = p.link {
            span.add_link(link);
        }
        sends.push(p.send);
        answers.push(Answer {
            reply: p.reply,
            _share: p.share,
        });
    }
    answer_batch(db, settings, sends, answers)
        .instrument(span)
        .await
}

/// When a batch's `COMMIT` was sent and when it was answered.
type Committed = (Instant, Instant);

/// Appends `sends` and answers each on its `answers` (in the same order). When the commit
/// ran, if the batch was appended as one ([`SendAdmission::appended`]); `None` when it failed
/// or was appended send by send (rare: then the last commit recorded stays, and excuses only
/// the part of a wait it overlapped).
async fn answer_batch(
    db: &Routing,
    settings: &GroupCommitSettings,
    sends: Vec<NewSend>,
    answers: Vec<Answer>,
) -> Option<Committed> {
    match append_batch(db, settings, &sends).await {
        Ok((results, commit)) => {
            for (answer, result) in answers.into_iter().zip(results) {
                answer.send(result);
            }
            return Some(commit);
        }
        Err(BatchError::CommitUnknown(e)) => {
            tracing::warn!(error = %e, sends = sends.len(), "batch commit not confirmed");
            for answer in answers {
                answer.send(Err(ApiError::Unavailable {
                    detail: "the database did not confirm the send; retry it with the same \
                             client_id"
                        .into(),
                    retry_after: 1,
                }));
            }
        }
        Err(BatchError::Failed(e)) if sends.len() == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                answer.send(single_failure(e));
            }
        }
        Err(BatchError::Failed(e)) if unavailable(&e) => {
            tracing::warn!(error = %e, sends = sends.len(), "batch not appended");
            for answer in answers {
                answer.send(Err(ApiError::Unavailable {
                    detail: "database unavailable, try again shortly".into(),
                    retry_after: 1,
                }));
            }
        }
        // The statement failed as a whole: each send on its own, so a bad one fails alone.
        Err(BatchError::Failed(e)) => {
            tracing::warn!(error = %e, sends = sends.len(), "batch failed; appending its sends one by one");
            for (send, answer) in sends.into_iter().zip(answers) {
                let result = match append_batch(db, settings, std::slice::from_ref(&send)).await {
                    Ok((mut r, _)) => r.pop().unwrap_or_else(|| Err(conversation_not_found())),
                    Err(BatchError::Failed(e)) => single_failure(e),
                    Err(BatchError::CommitUnknown(_)) => Err(ApiError::Unavailable {
                        detail: "the database did not confirm the send; retry it with the \
                                 same client_id"
                            .into(),
                        retry_after: 1,
                    }),
                };
                answer.send(result);
            }
        }
    }
    None
}

/// The answer to a send appended alone whose statement failed: its `client_id` taken by a
/// send committed on another instance meanwhile is a repeat (the original answers); anything
/// else as the database error says.
fn single_failure(e: DbError) -> Result<Appended, ApiError> {
    if let DbError::Query(q) = &e {
        if crate::platform::db::unique_violation(q) == Some("messages_client_id_key") {
            return Ok(Appended {
                outcome: Outcome::Repeated,
                lsn: Lsn::from(0),
            });
        }
    }
    Err(e.into())
}

/// Whether `e` says the database cannot be used now (every send would fail alike).
fn unavailable(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Unavailable(_) | DbError::ConnectionLost | DbError::Timeout | DbError::ReadOnly
    )
}

/// The batch statement: see the module documentation. Parameters: `$1` ids, `$2`
/// conversations, `$3` senders, `$4` contents, `$5` reply_to, `$6` client_ids (arrays in
/// queue order), `$7` the send budget, `$8` its window in seconds, `$9` the names each
/// send mentions (space-separated, lower case; [`Mentions`]), `$10` whether it says `@all`,
/// `$11` whether members (not only admins) may, `$12` priorities, `$13` thread roots. A
/// mention counts for a current participant other than the sender; `@all` only in a group.
/// Each appended message's mentions are recorded (`messaging.mentions`);
/// [`QUEUE_NOTIFICATIONS`], in the same transaction, queues it for notification work. One
/// row per send, in order: `status` (`created`, `not_found`, `read_only`, `repeated`,
/// `bad_reply`, `bad_thread`, `rate_limited`), `window_left` (seconds to the budget's next
/// window), and for `created` the message ([`MESSAGE_COLUMNS`]) with its `recipients` and
/// `quote_blind` (as `append_for`) and its thread root's new summary (`root_seq`,
/// `root_reply_count`, `root_last_reply_at`, `root_participants`; NULL outside a thread).
pub static APPEND_BATCH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| append_batch_sql(BatchShape::Linked));

/// [`APPEND_BATCH`] for a [`BatchShape::Plain`] batch: the same parameters and result
/// columns, without the parts that only a reply, a thread reply or a mention uses (the
/// look-ups of `reply_to` and the thread root, resolving mentions and recording them, the
/// roots' summaries and who follows them, the quote's audience). For such a batch both give
/// the same rows: every send passes those checks, mentions nobody and starts no thread.
/// Were it ever given a send with a `reply_to` or a thread root, it refuses that send
/// (`bad_reply`, `bad_thread`) instead of storing it unchecked; a mention it would drop.
///
/// Why a second statement: PostgreSQL builds every node of a plan at each execution
/// (`ExecutorStart`, even for parts that get no row), and for the small batches of a
/// lightly loaded instance that start-up is a large part of a send's cost — in a perf
/// profile of batches of one, `ExecutorStart` took 16.8 % of the machine's samples against
/// 23.1 % for `ExecutorRun`. Without those parts the generic plan has 57 nodes instead of
/// 106, and batches of one ran at 797, 981, 992, 862 and 947 a second against 609, 811,
/// 864, 704 and 718 (pgbench, 2 connections, generic plans, alternating runs of 12 s,
/// 2026-12-04).
pub static APPEND_PLAIN_BATCH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| append_batch_sql(BatchShape::Plain));

/// Which form of the batch statement a batch needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchShape {
    /// No send of the batch replies, replies in a thread or mentions anyone (`@all`
    /// included): [`APPEND_PLAIN_BATCH`].
    Plain,
    /// Some send does: [`APPEND_BATCH`].
    Linked,
}

impl BatchShape {
    /// The shape of a batch of `sends`, whose mentions are `mentions` (in the same order).
    pub fn of(sends: &[NewSend], mentions: &[Mentions]) -> Self {
        let linked = sends
            .iter()
            .any(|s| s.reply_to.is_some() || s.thread_root.is_some())
            || mentions.iter().any(|m| m.all || !m.names.is_empty());
        if linked {
            Self::Linked
        } else {
            Self::Plain
        }
    }

    /// The statement for this shape.
    pub fn statement(self) -> &'static str {
        match self {
            Self::Plain => APPEND_PLAIN_BATCH.as_str(),
            Self::Linked => APPEND_BATCH.as_str(),
        }
    }
}

/// The batch statement's text for `shape` (see [`APPEND_BATCH`], [`APPEND_PLAIN_BATCH`]).
fn append_batch_sql(shape: BatchShape) -> String {
    let linked = shape == BatchShape::Linked;
    let replying = if linked {
        "SELECT f.* FROM first_sends f
             WHERE f.reply_to IS NULL OR EXISTS (
                 SELECT 1 FROM messaging.messages pm
                 WHERE pm.id = f.reply_to AND pm.conversation_id = f.conversation_id
                   AND pm.seq >= f.visible_from_seq)"
    } else {
        "SELECT f.* FROM first_sends f WHERE f.reply_to IS NULL"
    };
    let threaded = if linked {
        "-- A thread reply names a message the sender can see (not a system message);
             -- naming a reply continues that reply's thread.
             -- The root must be visible to the sender too (it comes before its replies).
             SELECT r.*, t.root FROM replying r
             LEFT JOIN LATERAL (
                 SELECT coalesce(x.thread_root_id, x.id) AS root FROM messaging.messages x
                 LEFT JOIN messaging.messages rt ON rt.id = x.thread_root_id
                 WHERE x.id = r.thread_root AND x.conversation_id = r.conversation_id
                   AND coalesce(rt.seq, x.seq) >= r.visible_from_seq
                   AND x.kind <> 'system') t ON true
             WHERE r.thread_root IS NULL OR t.root IS NOT NULL"
    } else {
        "SELECT r.*, NULL::uuid AS root FROM replying r WHERE r.thread_root IS NULL"
    };
    let mentions = if linked {
        mentions::resolve_sql("nb.conversation_id", "nb.sender_id", "nb.names")
    } else {
        "'{}'::uuid[]".to_owned()
    };
    // `$11` stays in the plain form too: every parameter must appear for its type to be known.
    let mentions_all =
        mentions::all_sql("nb.want_all", "b.is_group", "nb.sender_role", "$11::bool");
    let linked_parts = if linked { LINKED_PARTS } else { "" };
    let (audience, root_columns, link_joins) = if linked {
        (
            AUDIENCE_COLUMNS.as_str(),
            "rt.thread_reply_count AS root_reply_count,
                rt.thread_last_reply_at AS root_last_reply_at,
                rt.thread_participants AS root_participants, rt.seq AS root_seq",
            "LEFT JOIN roots rt ON rt.id = m.thread_root_id
             LEFT JOIN messaging.messages pm ON pm.id = m.reply_to",
        )
    } else {
        (
            AUDIENCE_COLUMNS_WITHOUT_QUOTE.as_str(),
            "NULL::int4 AS root_reply_count, NULL::timestamptz AS root_last_reply_at,
                NULL::uuid[] AS root_participants, NULL::int8 AS root_seq",
            "",
        )
    };
    format!(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[],
                                  $6::text[], $9::text[], $10::bool[], $12::text[], $13::uuid[])
                 WITH ORDINALITY AS t(id, conversation_id, sender_id, content, reply_to,
                                      client_id, names, want_all, priority, thread_root, ord)
         ), scoped AS (
             SELECT i.*, p.visible_from_seq, p.role AS sender_role, cv.blocked
             FROM input i
             JOIN messaging.participants p
               ON p.conversation_id = i.conversation_id AND p.user_id = i.sender_id
              AND p.left_at IS NULL
             JOIN messaging.conversations cv ON cv.id = i.conversation_id
         ), writable AS (
             SELECT s.* FROM scoped s WHERE NOT s.blocked
         ), fresh AS (
             SELECT s.*, row_number() OVER (PARTITION BY s.conversation_id, s.sender_id,
                                                         s.client_id ORDER BY s.ord) AS nth
             FROM writable s
             WHERE s.client_id IS NULL OR NOT EXISTS (
                 SELECT 1 FROM messaging.messages e
                 WHERE e.conversation_id = s.conversation_id AND e.sender_id = s.sender_id
                   AND e.client_id = s.client_id)
         ), first_sends AS (
             SELECT f.* FROM fresh f WHERE f.client_id IS NULL OR f.nth = 1
         ), replying AS (
             {replying}
         ), threaded AS (
             {threaded}
         ), spend AS (
             INSERT INTO messaging.user_counters AS s (user_id, budget, window_start, amount)
             SELECT r.sender_id, 'send',
                    to_timestamp(floor(extract(epoch FROM now())::float8 / $8::float8)
                                 * $8::float8),
                    count(*)
             FROM threaded r GROUP BY r.sender_id ORDER BY r.sender_id
             ON CONFLICT (user_id, budget) DO UPDATE SET
                 amount = CASE WHEN s.window_start = EXCLUDED.window_start
                               THEN s.amount + EXCLUDED.amount ELSE EXCLUDED.amount END,
                 window_start = EXCLUDED.window_start
             RETURNING s.user_id, s.amount AS total,
                 extract(epoch FROM s.window_start + make_interval(secs => $8::float8)
                                   - now())::float8 AS window_left
         ), allowed AS (
             SELECT q.* FROM (
                 SELECT r.*, row_number() OVER (PARTITION BY r.sender_id ORDER BY r.ord) AS k,
                        count(*) OVER (PARTITION BY r.sender_id) AS n
                 FROM threaded r) q
             JOIN spend sp ON sp.user_id = q.sender_id
             WHERE sp.total - q.n + q.k <= $7::int8
         ), numbered AS (
             SELECT a.id, a.conversation_id, a.sender_id, a.content, a.reply_to, a.client_id,
                    a.names, a.want_all, a.sender_role, a.priority, a.root,
                    row_number() OVER (PARTITION BY a.conversation_id ORDER BY a.ord) AS pos
             FROM allowed a
         ), bumped AS (
             UPDATE messaging.conversations cv
             SET last_seq = cv.last_seq + x.n, last_rev = cv.last_rev + x.n,
                 last_activity_at = now()
             FROM (SELECT conversation_id, count(*) AS n FROM allowed
                   GROUP BY conversation_id) x
             WHERE cv.id = x.conversation_id
             RETURNING cv.id, cv.is_group, cv.last_seq - x.n AS base_seq,
                       cv.last_rev - x.n AS base_rev
         ), m AS (
             INSERT INTO messaging.messages
                 (id, conversation_id, seq, sender_id, kind, content, reply_to, client_id,
                  rev, created_rev, mentions, mentions_all, priority, thread_root_id)
             SELECT nb.id, nb.conversation_id, b.base_seq + nb.pos, nb.sender_id, 'text',
                    nb.content, nb.reply_to, nb.client_id, b.base_rev + nb.pos,
                    b.base_rev + nb.pos,
                    {mentions}, {mentions_all}, nb.priority, nb.root
             FROM numbered nb JOIN bumped b ON b.id = nb.conversation_id
             RETURNING *
{linked_parts}         ), marked AS (
             UPDATE messaging.participants p SET last_read_seq = GREATEST(p.last_read_seq, x.seq),
                 last_delivered_seq = GREATEST(p.last_delivered_seq, x.seq)
             FROM (SELECT conversation_id, sender_id, max(seq) AS seq FROM m
                   GROUP BY conversation_id, sender_id) x
             WHERE p.conversation_id = x.conversation_id AND p.user_id = x.sender_id
         )
         SELECT i.ord,
                CASE WHEN m.id IS NOT NULL THEN 'created'
                     WHEN NOT EXISTS (SELECT 1 FROM scoped s WHERE s.ord = i.ord)
                          THEN 'not_found'
                     WHEN NOT EXISTS (SELECT 1 FROM writable w WHERE w.ord = i.ord)
                          THEN 'read_only'
                     WHEN NOT EXISTS (SELECT 1 FROM first_sends f WHERE f.ord = i.ord)
                          THEN 'repeated'
                     WHEN NOT EXISTS (SELECT 1 FROM replying r WHERE r.ord = i.ord)
                          THEN 'bad_reply'
                     WHEN NOT EXISTS (SELECT 1 FROM threaded t WHERE t.ord = i.ord)
                          THEN 'bad_thread'
                     ELSE 'rate_limited' END AS status,
                (SELECT sp.window_left FROM spend sp WHERE sp.user_id = i.sender_id)
                    AS window_left,
                {columns}, {audience}, {root_columns}
         FROM input i
             LEFT JOIN m ON m.id = i.id
             {link_joins}
         ORDER BY i.ord",
        columns = MESSAGE_COLUMNS.as_str(),
    )
}

/// The parts of [`APPEND_BATCH`] after `m` that only a linked batch needs: its mentions
/// recorded, its thread roots' summaries, and who follows each thread.
const LINKED_PARTS: &str = "         ), mentioned AS (
             -- Not counted for whoever blocks the sender (issue 20).
             INSERT INTO messaging.mentions (user_id, conversation_id, seq)
             SELECT u.id, m.conversation_id, m.seq FROM m, unnest(m.mentions) AS u(id)
             WHERE NOT EXISTS (SELECT 1 FROM messaging.blocks bl
                               WHERE bl.blocker_id = u.id AND bl.blocked_id = m.sender_id)
         ), roots AS (
             -- Each thread's root: its reply count, last reply, and who took part.
             UPDATE messaging.messages r
             SET thread_reply_count = r.thread_reply_count + x.n,
                 thread_last_reply_at = x.at,
                 thread_participants = (
                     SELECT array_agg(d.u ORDER BY d.first) FROM (
                         SELECT t.u, min(t.o) AS first
                         FROM unnest(coalesce(r.thread_participants, ARRAY[r.sender_id])
                                     || x.senders) WITH ORDINALITY AS t(u, o)
                         WHERE t.u IS NOT NULL GROUP BY t.u ORDER BY first LIMIT 20) d)
             FROM (SELECT thread_root_id, count(*) AS n, max(created_at) AS at,
                          array_agg(sender_id ORDER BY seq) AS senders
                   FROM m WHERE thread_root_id IS NOT NULL GROUP BY thread_root_id) x
             WHERE r.id = x.thread_root_id
             RETURNING r.id, r.seq, r.thread_reply_count, r.thread_last_reply_at,
                       r.thread_participants
         ), followed AS (
             -- The root's sender and each replier follow the thread; a replier has read it
             -- up to their reply.
             INSERT INTO messaging.thread_reads AS tr (user_id, root_id, conversation_id, last_read_seq)
             SELECT y.u, y.root, y.conv, max(y.s) FROM (
                 SELECT m.sender_id AS u, m.thread_root_id AS root, m.conversation_id AS conv,
                        m.seq AS s
                 FROM m WHERE m.thread_root_id IS NOT NULL
                 UNION ALL
                 SELECT r.sender_id, r.id, r.conversation_id, 0 FROM messaging.messages r
                 WHERE r.id IN (SELECT thread_root_id FROM m) AND r.sender_id IS NOT NULL
             ) y GROUP BY y.u, y.root, y.conv
             ON CONFLICT (user_id, root_id) DO UPDATE
                 SET last_read_seq = GREATEST(tr.last_read_seq, EXCLUDED.last_read_seq)
";

/// Opens a batch's transaction, its statements planned once per connection: with PostgreSQL's
/// default (`plan_cache_mode = auto`, docs §20.7.4) a prepared statement whose custom plans
/// look cheaper than the generic one is planned again at every execution, and
/// [`APPEND_BATCH`] is a large statement — planning it cost more than executing it for small
/// batches. Measured with pgbench (the statement with array parameters, 2 connections, a
/// vacuumed primary): batches of 1 1259 vs 566 sends/s, of 8 4235 vs 3915, of 16 4544 vs
/// 4196, of 32 5693 vs 6566 (the generic plan assumes ten sends). `SET LOCAL` ends with the
/// transaction, so the pooled connection's other statements keep the default.
pub const BEGIN_BATCH: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// Locks, in id order, the batch's conversations (`$1`, per send) that the send's sender
/// (`$2`) is a current participant of — a stranger's send locks nothing (it is refused by
/// the append statement, which checks again under the lock).
///
/// The ids are gathered first (an InitPlan: the batch's own rows, through the participants'
/// index) and the conversations then looked up by them: no join between conversations and
/// the batch that the planner could order the other way round. With the semi-join this
/// replaced, a generic plan made while the statistics took 1032 conversations for 35 scanned
/// every conversation and probed the batch once per conversation: 31 ms a batch instead of
/// 0.1 (measured 2026-12-03, full benchmark; see migration V15).
pub const LOCK_CONVERSATIONS: &str = "SELECT 1 FROM messaging.conversations c
     WHERE c.id = ANY (ARRAY(
         SELECT s.conversation_id
         FROM unnest($1::uuid[], $2::uuid[]) AS s(conversation_id, sender_id)
         JOIN messaging.participants p
           ON p.conversation_id = s.conversation_id AND p.user_id = s.sender_id
          AND p.left_at IS NULL))
     ORDER BY c.id FOR NO KEY UPDATE OF c";

/// Queues the messages the batch appended (`$1`, every send's id: a send that was refused
/// appended no row under its id) for notification work (`messaging.notify_queue`, the
/// outbox the notification worker drains), in the batch's transaction, pipelined right after
/// [`APPEND_BATCH`].
///
/// Its own statement, not a part of the batch statement: a prepared statement's plan is
/// thrown away whenever a table it reads gets a new row in `pg_class` (an ANALYZE, or a
/// VACUUM that changes its size, row count or all-visible pages; PostgreSQL docs, PREPARE,
/// "Notes"), and autovacuum vacuums the queue, which every send fills and the worker
/// empties, every few seconds (`autovacuum_naptime`). In the batch statement, each of those cost the
/// next batch on every connection a new plan of ~5 ms (measured 2026-12-03 in the fan-out
/// benchmark at 50 sends/s: a run of slow sends every 5 s, the tail of the round); this
/// statement plans in a fraction of a millisecond.
pub const QUEUE_NOTIFICATIONS: &str =
    "INSERT INTO messaging.notify_queue (message_id, conversation_id, seq)
     SELECT m.id, m.conversation_id, m.seq FROM messaging.messages m
     WHERE m.id = ANY ($1::uuid[])";

/// Why a batch was not appended.
#[derive(Debug)]
enum BatchError {
    /// Nothing of it was committed: its sends may be retried.
    Failed(DbError),
    /// The commit may or may not have happened: answered as unavailable, never retried.
    CommitUnknown(DbError),
}

/// Commits the open transaction on `conn` and returns the primary's WAL position right
/// after, in one round trip.
///
/// Errors: the commit failed (connection lost), or the position did not parse.
async fn commit_at(conn: &Conn) -> Result<Lsn, DbError> {
    use tokio_postgres::SimpleQueryMessage;
    let messages = conn
        .simple_query("COMMIT; SELECT pg_current_wal_lsn()")
        .await?;
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse::<Lsn>().ok()),
            _ => None,
        })
        .ok_or_else(|| DbError::Unavailable("no WAL position after the commit".into()))
}

/// Appends `sends` in one transaction (see the module documentation) and returns each
/// one's result, in order, with when its commit's round trip ran, from sending `COMMIT` to
/// the answer (the WAL flush, a disk's stall included: [`SendAdmission::appended`]).
///
/// Errors: [`BatchError::Failed`] when nothing of it was appended,
/// [`BatchError::CommitUnknown`] when the commit's outcome is unknown.
async fn append_batch(
    db: &Routing,
    settings: &GroupCommitSettings,
    sends: &[NewSend],
) -> Result<(Vec<Result<Appended, ApiError>>, Committed), BatchError> {
    let ids: Vec<Uuid> = sends.iter().map(|_| Uuid::now_v7()).collect();
    let convs: Vec<Uuid> = sends.iter().map(|s| s.conversation_id).collect();
    let senders: Vec<Uuid> = sends.iter().map(|s| s.sender_id).collect();
    let contents: Vec<&str> = sends.iter().map(|s| s.content.as_str()).collect();
    let replies: Vec<Option<Uuid>> = sends.iter().map(|s| s.reply_to).collect();
    let client_ids: Vec<Option<&str>> = sends.iter().map(|s| s.client_id.as_deref()).collect();
    let mentions: Vec<Mentions> = sends
        .iter()
        .map(|s| Mentions::of(s.content.as_str()))
        .collect();
    let names: Vec<String> = mentions.iter().map(|m| m.names.join(" ")).collect();
    let all: Vec<bool> = mentions.iter().map(|m| m.all).collect();
    let priorities: Vec<&str> = sends.iter().map(|s| s.priority.as_str()).collect();
    let roots: Vec<Option<Uuid>> = sends.iter().map(|s| s.thread_root).collect();
    let window = settings.rate_window.as_secs_f64().max(1.0);
    let append = BatchShape::of(sends, &mentions).statement();

    // BEGIN, the lock, the batch and its queueing for notifications go out together
    // (tokio-postgres pipelines requests polled together); COMMIT and the WAL position come
    // back in one simple query: two round trips per batch.
    let conn = db.primary().await.map_err(BatchError::Failed)?;
    // Prepared first (cached per connection), so all four requests go out on the first
    // poll, in this order (`biased`): the append must never run before the lock, nor the
    // queueing before the append.
    for sql in [LOCK_CONVERSATIONS, append, QUEUE_NOTIFICATIONS] {
        conn.prepare_cached(sql)
            .await
            .map_err(|e| BatchError::Failed(e.into()))?;
    }
    let statements = async {
        tokio::try_join!(
            biased;
            async { conn.batch_execute(BEGIN_BATCH).await.map_err(DbError::from) },
            async {
                conn.execute_t(LOCK_CONVERSATIONS, &[&convs, &senders])
                    .await
                    .map_err(DbError::from)
            },
            async {
                conn.query_t(
                    append,
                    &[
                        &ids,
                        &convs,
                        &senders,
                        &contents,
                        &replies,
                        &client_ids,
                        &settings.rate_limit,
                        &window,
                        &names,
                        &all,
                        &settings.mention_all_members,
                        &priorities,
                        &roots,
                    ],
                )
                .await
                .map_err(DbError::from)
            },
            async {
                conn.execute_t(QUEUE_NOTIFICATIONS, &[&ids])
                    .await
                    .map_err(DbError::from)
            },
        )
    };
    let rows = match statements.await {
        Ok((_, _, rows, _)) => rows,
        Err(e) => {
            // Leave the connection as the pool expects it: outside any transaction.
            let _ = conn.batch_execute("ROLLBACK").await;
            return Err(BatchError::Failed(e));
        }
    };
    // A failure from here on leaves the outcome unknown (the commit may have happened):
    // never retried, so nothing is appended twice.
    let committing = Instant::now();
    let lsn = commit_at(&conn).await.map_err(BatchError::CommitUnknown)?;
    let commit = (committing, Instant::now());

    let rate_detail = || super::budget::send_detail(settings.rate_limit, settings.rate_window);
    let results = rows
        .iter()
        .map(|row| {
            let status: &str = row.get("status");
            let outcome = match status {
                "created" => Outcome::Created {
                    message: Box::new(Message::from_row(row)),
                    audience: Audience::from_row(row),
                    thread: row
                        .get::<_, Option<i64>>("root_seq")
                        .zip(row.get::<_, Option<i32>>("root_reply_count"))
                        .map(|(seq, reply_count)| {
                            let summary = super::model::ThreadSummary {
                                reply_count,
                                last_reply_at: row.get("root_last_reply_at"),
                                participants: row
                                    .get::<_, Option<Vec<Uuid>>>("root_participants")
                                    .unwrap_or_default(),
                            };
                            (seq, summary)
                        }),
                },
                "repeated" => Outcome::Repeated,
                "read_only" => return Err(super::visibility::read_only()),
                "bad_thread" => {
                    return Err(ApiError::invalid_field(
                        "thread_root_id",
                        "no such message in this conversation",
                    ))
                }
                "bad_reply" => {
                    return Err(ApiError::invalid_field(
                        "reply_to",
                        "no such message in this conversation",
                    ))
                }
                "rate_limited" => {
                    let left: Option<f64> = row.get("window_left");
                    return Err(ApiError::TooManyRequests {
                        detail: rate_detail(),
                        retry_after: left.unwrap_or(1.0).ceil().max(1.0) as u32,
                    });
                }
                _ => return Err(conversation_not_found()),
            };
            Ok(Appended { outcome, lsn })
        })
        .collect();
    Ok((results, commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(content: &str, reply_to: Option<Uuid>, thread_root: Option<Uuid>) -> NewSend {
        NewSend {
            conversation_id: Uuid::now_v7(),
            sender_id: Uuid::now_v7(),
            content: MessageContent::parse(content.to_owned(), 4000).expect("valid content"),
            reply_to,
            client_id: None,
            priority: Default::default(),
            thread_root,
        }
    }

    fn shape(sends: &[NewSend]) -> BatchShape {
        let mentions: Vec<Mentions> = sends
            .iter()
            .map(|s| Mentions::of(s.content.as_str()))
            .collect();
        BatchShape::of(sends, &mentions)
    }

    /// The plain statement skips the reply and thread checks and the mentions: one send
    /// that needs any of them makes its whole batch linked, wherever it stands.
    #[test]
    fn one_reply_thread_reply_or_mention_makes_the_whole_batch_linked() {
        let plain = || send("hello there, mail me at a.b@example.com", None, None);
        assert_eq!(shape(&[plain(), plain()]), BatchShape::Plain);
        for odd in [
            send("agreed", Some(Uuid::now_v7()), None),
            send("in the thread", None, Some(Uuid::now_v7())),
            send("thanks @bob", None, None),
            send("@all meeting at noon", None, None),
        ] {
            let content = odd.content.as_str().to_owned();
            assert_eq!(
                shape(&[plain(), odd, plain()]),
                BatchShape::Linked,
                "a batch with {content:?} ran the plain statement"
            );
        }
    }
}
