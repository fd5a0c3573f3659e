//! Wire shapes of the messaging API (DESIGN.md §3), their SQL, and the rules of who sees
//! what: a participant sees the history within their membership period ([`Scope`]).

use crate::platform::db::Traced;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use uuid::Uuid;

use super::domain::MessageKind;

/// A [`MessageOf`] owning its text: what handlers keep, publish and answer with one message.
pub type Message = MessageOf<'static>;

/// A message: `{id, conversation_id, seq, sender_id, kind, content, reply_to, quote?,
/// attachment?, system?, created_at, edited_at, deleted}`. `seq` is per conversation,
/// gapless, from 1. `content` is null once deleted; `sender_id` is the actor of a `system`
/// message.
// The text (`content`) is owned ([`Message`]) or borrowed for `'r` from the database row it
// was read from ([`MessageOf::borrowed_from_row_at`]): a page of history is encoded to JSON
// straight from its rows, no message's text copied out of them first (issue 16). One shape,
// one `Serialize` and one schema (`Message`) for both.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct MessageOf<'r> {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    /// Revision of the latest change to this message (its append, edit or delete); see
    /// `migrations/messaging/V3`. Orders live delivery and `resume`.
    pub rev: i64,
    pub sender_id: Option<Uuid>,
    pub kind: MessageKind,
    #[schema(value_type = Option<String>)]
    pub content: Option<Cow<'r, str>>,
    pub reply_to: Option<Uuid>,
    /// The thread this message replies in (its root, a top-level message); absent for a
    /// top-level message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_root_id: Option<Uuid>,
    /// On a thread's root: its replies (absent while it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    /// A short quote of the parent when `reply_to` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// The file of a `file` message (gone once the message is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentInfo>,
    /// What a `system` message records: `{action, actor_id, user_ids?, name?, role?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub system: Option<serde_json::Value>,
    /// The participants it mentions (`@username`), as resolved when it was written.
    pub mentions: Vec<Uuid>,
    /// True when it mentions the whole group (`@all`).
    pub mentions_all: bool,
    /// Reactions, each emoji once with how many reacted with it, in the order each emoji
    /// was first used (at most [`super::reactions::MAX_DISTINCT`]); empty for none.
    pub reactions: Vec<ReactionCount>,
    /// Set by the sender: `normal`, `important` or `urgent`.
    pub priority: super::domain::Priority,
    /// A forwarded copy: where it came from (absent: not forwarded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_from: Option<ForwardedFrom>,
    /// Pinned to the conversation: by whom and when (absent: not pinned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    #[serde(serialize_with = "crate::platform::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::platform::timestamp::rfc3339_opt")]
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

/// The start of a replied-to message: at most [`QUOTE_CHARS`] characters. Shown only to a
/// reader whose visible range holds the parent (a late joiner never sees a quote of what
/// came before them): see [`Message::seen_from`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Quote {
    /// The parent's `seq` (not sent): decides who may see the quote.
    #[serde(skip)]
    pub seq: i64,
    pub id: Uuid,
    pub sender_id: Option<Uuid>,
    pub excerpt: Option<String>,
    pub deleted: bool,
}

/// One emoji's reactions on a message.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// Whether the reader reacted with it. Present in answers to one reader (HTTP, and a
    /// socket's `resume` replay); absent in live frames shared by every recipient, where the
    /// `reaction.*` events name who reacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<bool>,
}

/// Where a forwarded message came from: the original's sender and time, and its
/// conversation when every participant here could see the original as it was forwarded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForwardedFrom {
    pub message_id: Uuid,
    pub sender_id: Option<Uuid>,
    #[serde(serialize_with = "crate::platform::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
}

/// A thread's root summary: how many replies, the last one's time, who took part (the
/// root's sender first, then repliers by their first reply; at most 20).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThreadSummary {
    pub reply_count: i32,
    #[serde(serialize_with = "crate::platform::timestamp::rfc3339_opt")]
    pub last_reply_at: Option<DateTime<Utc>>,
    pub participants: Vec<Uuid>,
}

/// Who pinned a message, and when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Pinned {
    pub by: Uuid,
    #[serde(serialize_with = "crate::platform::timestamp::rfc3339")]
    pub at: DateTime<Utc>,
}

/// Length of a reply's quote, in characters.
pub const QUOTE_CHARS: i32 = 140;

/// An attachment's metadata. `sha256` is hex; `size` in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachmentInfo {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// Columns for [`Message::from_row`], selected `FROM` [`MESSAGE_FROM`] (the message `m`):
/// the message's own columns, its quote (`quote`, JSON `{id, seq, sender_id, excerpt,
/// deleted}`) and its file (`attachment`, JSON [`AttachmentInfo`]), the quote unscoped — for
/// the message as its sender wrote it; a reader's view goes through
/// [`message_columns_seen_from`] or [`Message::seen_from`].
pub static MESSAGE_COLUMNS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| message_columns(None, true));

/// [`MESSAGE_COLUMNS`] for a reader who sees history from `visible_from` on (an SQL
/// expression: a column such as `p.visible_from_seq`, or a parameter): the quote is there
/// only when the parent lies within that range, so a quote never shows what the reader
/// cannot see.
pub fn message_columns_seen_from(visible_from: &str) -> String {
    message_columns(Some(visible_from), true)
}

/// [`message_columns_seen_from`] without `conversation_id`, for a page of one conversation
/// whose id the statement was given: one value fewer on every row (see [`message_columns`]
/// on what each costs). Read with [`MessageColumnIndex::in_conversation`].
pub fn page_columns_seen_from(visible_from: &str) -> String {
    message_columns(Some(visible_from), false)
}

/// The quote and the file are scalar subqueries behind a `CASE`, run only for a message
/// that has a parent or a file: as joins they cost an index probe (a rescan) for every row
/// of a page, a quarter of a history page's database time (measured with pgbench on the
/// history statement: 8.9–10.3k pages/s with the joins, 12.9–13.0k without).
///
/// Columns at the value most messages have travel as NULL ([`Message::from_row_at`] reads
/// NULL as that value): `kind` 'text', `priority` 'normal', `mentions` empty, `mentions_all`,
/// `deleted` false, `thread_reply_count` 0. Results come in binary format, and for every
/// value that is not NULL the server calls the type's send function, which starts with a
/// buffer of 1 KiB (`pq_begintypsend`, PostgreSQL 15 `src/backend/libpq/pqformat.c`); by
/// our reading of `printtup.c` and `aset.c`, past seven such values a row also outgrows the
/// 8 KiB first block of its per-row memory context, and a further block is then allocated
/// and freed for every row. A NULL costs the server only its length word. A typical message
/// row had 13 values to send; it has 7 (6 in a page of one conversation:
/// [`page_columns_seen_from`]). In `perf` of a history run before the change, PostgreSQL's
/// send functions took 10 % of its samples and glibc's `malloc`/`free` 5 %; per history
/// page, the replica's CPU went from 0.91–0.94 to 0.86–0.90 of the raw select's whole cost
/// in the same runs (`BENCH_ONLY=history`, two runs each, a noisy host).
fn message_columns(visible_from: Option<&str>, with_conversation: bool) -> String {
    let in_range = visible_from
        .map(|v| format!(" AND parent.seq >= {v}"))
        .unwrap_or_default();
    let conversation = if with_conversation {
        " m.conversation_id,"
    } else {
        ""
    };
    format!(
        "m.id,{conversation} m.seq, m.rev, m.sender_id, NULLIF(m.kind, 'text') AS kind, \
         m.content, m.reply_to, m.created_at, m.edited_at, \
         CASE WHEN m.deleted_at IS NOT NULL THEN true END AS deleted, m.meta, \
         NULLIF(m.mentions, '{{}}') AS mentions, NULLIF(m.mentions_all, false) AS mentions_all, \
         CASE WHEN m.reply_to IS NULL THEN NULL ELSE ( \
             SELECT json_build_object('id', parent.id, 'seq', parent.seq, \
                 'sender_id', parent.sender_id, 'excerpt', left(parent.content, {QUOTE_CHARS}), \
                 'deleted', parent.deleted_at IS NOT NULL) \
             FROM messaging.messages parent WHERE parent.id = m.reply_to{in_range}) END AS quote, \
         CASE WHEN m.attachment_id IS NULL THEN NULL ELSE ( \
             SELECT json_build_object('id', att.id, 'filename', att.filename, \
                 'content_type', att.content_type, 'size', att.size, \
                 'sha256', encode(att.sha256, 'hex')) \
             FROM messaging.attachments att WHERE att.id = m.attachment_id) END AS attachment, \
         m.reactions, m.pinned_at, m.pinned_by, NULLIF(m.priority, 'normal') AS priority, \
         m.forwarded_from, m.thread_root_id, \
         NULLIF(m.thread_reply_count, 0) AS thread_reply_count, m.thread_last_reply_at, \
         m.thread_participants"
    )
}

/// One more column for [`MESSAGE_COLUMNS`] (after a comma): the emoji `reader` (an SQL
/// expression: a parameter or a column) reacted with, so each reaction says `me`. Looked up
/// only for messages that have reactions.
pub fn my_reactions_column(reader: &str) -> String {
    format!(
        "CASE WHEN m.reactions IS NULL THEN NULL ELSE ARRAY(
             SELECT r.emoji FROM messaging.reactions r
             WHERE r.message_id = m.id AND r.user_id = {reader}) END AS my_reactions"
    )
}

/// What [`MESSAGE_COLUMNS`] reads from: the message `m`.
pub const MESSAGE_FROM: &str = "messaging.messages m";

/// The `quote` column as the database builds it ([`message_columns`]).
#[derive(Deserialize)]
struct QuoteColumn {
    id: Uuid,
    seq: i64,
    sender_id: Option<Uuid>,
    excerpt: Option<String>,
    deleted: bool,
}

/// Where each column [`Message::from_row`] reads sits in a result set, found by name once
/// per result set: `Row::get` by name compares the name with every column's name at each
/// call, and a page of 50 messages made some 1 200 such calls over about 30 columns.
#[derive(Debug, Clone, Copy)]
pub struct MessageColumnIndex {
    id: usize,
    conversation_id: ConversationColumn,
    seq: usize,
    rev: usize,
    sender_id: usize,
    kind: usize,
    content: usize,
    reply_to: usize,
    thread_root_id: usize,
    thread_reply_count: usize,
    thread_last_reply_at: usize,
    thread_participants: usize,
    quote: usize,
    attachment: usize,
    meta: usize,
    mentions: usize,
    mentions_all: usize,
    reactions: usize,
    /// Only in statements that add [`my_reactions_column`].
    my_reactions: Option<usize>,
    priority: usize,
    forwarded_from: usize,
    pinned_at: usize,
    pinned_by: usize,
    created_at: usize,
    edited_at: usize,
    deleted: usize,
}

impl MessageColumnIndex {
    /// The positions of [`MESSAGE_COLUMNS`] among `columns` (a statement's or a row's). A
    /// column the statement lacks gets a position past the end, so reading it fails exactly
    /// as `Row::get` by name does (a mistake in the statement, not something a request can
    /// cause).
    pub fn of(columns: &[tokio_postgres::Column]) -> Self {
        let find = |name: &str| columns.iter().position(|c| c.name() == name);
        let at = |name: &str| find(name).unwrap_or(columns.len());
        Self {
            id: at("id"),
            conversation_id: ConversationColumn::At(at("conversation_id")),
            seq: at("seq"),
            rev: at("rev"),
            sender_id: at("sender_id"),
            kind: at("kind"),
            content: at("content"),
            reply_to: at("reply_to"),
            thread_root_id: at("thread_root_id"),
            thread_reply_count: at("thread_reply_count"),
            thread_last_reply_at: at("thread_last_reply_at"),
            thread_participants: at("thread_participants"),
            quote: at("quote"),
            attachment: at("attachment"),
            meta: at("meta"),
            mentions: at("mentions"),
            mentions_all: at("mentions_all"),
            reactions: at("reactions"),
            my_reactions: find("my_reactions"),
            priority: at("priority"),
            forwarded_from: at("forwarded_from"),
            pinned_at: at("pinned_at"),
            pinned_by: at("pinned_by"),
            created_at: at("created_at"),
            edited_at: at("edited_at"),
            deleted: at("deleted"),
        }
    }

    /// The positions of [`page_columns_seen_from`]'s columns (no `conversation_id`) in the
    /// rows of a page of `conversation_id`.
    pub fn in_conversation(columns: &[tokio_postgres::Column], conversation_id: Uuid) -> Self {
        Self {
            conversation_id: ConversationColumn::Known(conversation_id),
            ..Self::of(columns)
        }
    }
}

/// Where a row's conversation comes from: its column, or the statement's own parameter.
#[derive(Debug, Clone, Copy)]
enum ConversationColumn {
    At(usize),
    Known(Uuid),
}

impl Message {
    /// Reads a row selected with [`MESSAGE_COLUMNS`]. For many rows of one result, find the
    /// columns once ([`MessageColumnIndex::of`]) and use [`Message::from_row_at`].
    pub fn from_row(row: &tokio_postgres::Row) -> Self {
        Self::from_row_at(row, &MessageColumnIndex::of(row.columns()))
    }

    /// Reads a row selected with [`MESSAGE_COLUMNS`], its columns where `at` found them, into
    /// a message that outlives the row (its text copied).
    pub fn from_row_at(row: &tokio_postgres::Row, at: &MessageColumnIndex) -> Self {
        MessageOf::borrowed_from_row_at(row, at).into_owned()
    }
}

impl<'r> MessageOf<'r> {
    /// Reads a row selected with [`MESSAGE_COLUMNS`], its columns where `at` found them, the
    /// text borrowed from the row: for answers encoded while the rows are still at hand.
    pub fn borrowed_from_row_at(row: &'r tokio_postgres::Row, at: &MessageColumnIndex) -> Self {
        let json = |column: usize| row.get::<_, Option<serde_json::Value>>(column);
        // NULL for the common value: see `message_columns`.
        let thread_reply_count: i32 = row
            .get::<_, Option<i32>>(at.thread_reply_count)
            .unwrap_or(0);
        Self {
            id: row.get(at.id),
            conversation_id: match at.conversation_id {
                ConversationColumn::At(i) => row.get(i),
                ConversationColumn::Known(id) => id,
            },
            seq: row.get(at.seq),
            rev: row.get(at.rev),
            sender_id: row.get(at.sender_id),
            kind: MessageKind::from_column(row.get::<_, Option<&str>>(at.kind).unwrap_or("text")),
            content: row.get::<_, Option<&str>>(at.content).map(Cow::Borrowed),
            reply_to: row.get(at.reply_to),
            thread_root_id: row.get(at.thread_root_id),
            thread: (thread_reply_count > 0).then(|| ThreadSummary {
                reply_count: thread_reply_count,
                last_reply_at: row.get(at.thread_last_reply_at),
                participants: row
                    .get::<_, Option<Vec<Uuid>>>(at.thread_participants)
                    .unwrap_or_default(),
            }),
            quote: json(at.quote)
                .and_then(|v| serde_json::from_value::<QuoteColumn>(v).ok())
                .map(|q| Quote {
                    seq: q.seq,
                    id: q.id,
                    sender_id: q.sender_id,
                    excerpt: q.excerpt,
                    deleted: q.deleted,
                }),
            attachment: json(at.attachment).and_then(|v| serde_json::from_value(v).ok()),
            system: row.get(at.meta),
            mentions: row
                .get::<_, Option<Vec<Uuid>>>(at.mentions)
                .unwrap_or_default(),
            mentions_all: row.get::<_, Option<bool>>(at.mentions_all) == Some(true),
            reactions: reactions_of(row, at),
            priority: super::domain::Priority::from_column(
                row.get::<_, Option<&str>>(at.priority).unwrap_or("normal"),
            ),
            forwarded_from: json(at.forwarded_from).and_then(|v| serde_json::from_value(v).ok()),
            pinned: row
                .get::<_, Option<DateTime<Utc>>>(at.pinned_at)
                .zip(row.get::<_, Option<Uuid>>(at.pinned_by))
                .map(|(at, by)| Pinned { by, at }),
            created_at: row.get(at.created_at),
            edited_at: row.get(at.edited_at),
            deleted: row.get::<_, Option<bool>>(at.deleted) == Some(true),
        }
    }
}

/// The `reactions` column as counts, each with `me` when the row has `my_reactions`.
fn reactions_of(row: &tokio_postgres::Row, at: &MessageColumnIndex) -> Vec<ReactionCount> {
    let Some(serde_json::Value::Array(items)) =
        row.get::<_, Option<serde_json::Value>>(at.reactions)
    else {
        return Vec::new();
    };
    // Absent column (a statement without it): `me` unknown. Present: known, NULL meaning none.
    let mine: Option<Vec<String>> = at
        .my_reactions
        .and_then(|i| row.try_get::<_, Option<Vec<String>>>(i).ok())
        .map(Option::unwrap_or_default);
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value::<ReactionCount>(v).ok())
        .map(|mut r| {
            r.me = mine.as_ref().map(|m| m.contains(&r.emoji));
            r
        })
        .collect()
}

impl<'r> MessageOf<'r> {
    /// The same message owning its text, free of the row it was read from.
    pub fn into_owned(self) -> Message {
        // Every field named: a field added to the shape must be decided on here.
        let MessageOf {
            id,
            conversation_id,
            seq,
            rev,
            sender_id,
            kind,
            content,
            reply_to,
            thread_root_id,
            thread,
            quote,
            attachment,
            system,
            mentions,
            mentions_all,
            reactions,
            priority,
            forwarded_from,
            pinned,
            created_at,
            edited_at,
            deleted,
        } = self;
        MessageOf {
            id,
            conversation_id,
            seq,
            rev,
            sender_id,
            kind,
            content: content.map(|c| Cow::Owned(c.into_owned())),
            reply_to,
            thread_root_id,
            thread,
            quote,
            attachment,
            system,
            mentions,
            mentions_all,
            reactions,
            priority,
            forwarded_from,
            pinned,
            created_at,
            edited_at,
            deleted,
        }
    }

    /// The message as a reader whose visible range starts at `visible_from` sees it: without
    /// the quote of a parent from before that (issue 14: a late joiner reads nothing from
    /// before they joined, quotes included). `reply_to` stays: an id reveals no content.
    pub fn seen_from(mut self, visible_from: i64) -> Self {
        if self.quote.as_ref().is_some_and(|q| q.seq < visible_from) {
            self.quote = None;
        }
        self
    }

    /// The message as a former participant sees it: without what others do with it now —
    /// reactions, the pin, the thread's summary — which may have changed after they left
    /// (their view of a conversation stops at their departure, DESIGN.md §7).
    pub fn seen_as_former(mut self) -> Self {
        self.reactions = Vec::new();
        self.pinned = None;
        self.thread = None;
        self
    }
}

/// Loads one message by id (reactions without `me`: as every recipient of a live frame
/// gets it).
///
/// Errors: the query fails.
pub async fn load_message(
    db: &impl Traced,
    id: Uuid,
) -> Result<Option<Message>, tokio_postgres::Error> {
    let row = db
        .query_opt_t(
            &format!(
                "SELECT {} FROM {MESSAGE_FROM} WHERE m.id = $1",
                MESSAGE_COLUMNS.as_str()
            ),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(Message::from_row))
}

/// Loads one message by id as `reader` gets it in an answer: each reaction says `me`.
/// Unscoped (see [`super::visibility::visible_message`]).
///
/// Errors: the query fails.
pub async fn load_message_for(
    db: &impl Traced,
    id: Uuid,
    reader: Uuid,
) -> Result<Option<Message>, tokio_postgres::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {columns}, {mine} FROM {MESSAGE_FROM} WHERE m.id = $1",
            columns = MESSAGE_COLUMNS.as_str(),
            mine = my_reactions_column("$2")
        )
    });
    let row = db.query_opt_t(SQL.as_str(), &[&id, &reader]).await?;
    Ok(row.as_ref().map(Message::from_row))
}

/// A participant with their public profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Participant {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
    /// `admin` or `member`.
    pub role: String,
    pub joined_at: DateTime<Utc>,
    /// Read marker: every `seq` up to this one has been read.
    pub last_read_seq: i64,
    /// Delivered marker: every `seq` up to this one reached one of their devices.
    pub last_delivered_seq: i64,
    /// Connected right now (any device, any instance). Only in answers to one reader (absent
    /// in live frames shared by every participant, and for whoever blocks the reader).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// When they were last connected, if ever and not now.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A conversation with its current participants.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: Uuid,
    pub is_group: bool,
    pub name: Option<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seq: i64,
    pub last_activity_at: DateTime<Utc>,
    /// A direct conversation made read-only by a block (either way).
    pub blocked: bool,
    /// A group's avatar (`GET /api/conversations/{id}/avatar`); a new id when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_id: Option<Uuid>,
    pub participants: Vec<Participant>,
}

/// One entry of the caller's conversation list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationSummary {
    pub id: Uuid,
    pub is_group: bool,
    pub name: Option<String>,
    /// The last `seq` the caller can see (the conversation's, or their departure's).
    pub last_seq: i64,
    pub last_activity_at: DateTime<Utc>,
    /// The caller's read marker.
    pub last_read_seq: i64,
    /// Marked unread from this `seq` (`POST …/unread`) until read up to it again.
    pub unread_from_seq: Option<i64>,
    /// `last_seq - last_read_seq` (or from `unread_from_seq` when that is earlier), thread
    /// replies left out.
    pub unread_count: i64,
    /// Replies by others in threads the caller follows, after their thread read markers
    /// (not in `unread_count`).
    pub thread_unread_count: i64,
    /// Of the unread, the messages that mention the caller (`@username`, or `@all` in a group).
    pub mention_count: i64,
    /// The caller's level for this conversation (null: their default for its kind).
    pub notify_level: Option<super::notifications::preferences::Level>,
    /// Nothing notifies the caller from it until then (null: not muted).
    pub muted_until: Option<DateTime<Utc>>,
    /// True once the caller has left or been removed: history up to then stays readable.
    pub left: bool,
    /// A direct conversation made read-only by a block (either way): see `GET /api/blocks`.
    pub blocked: bool,
    /// A group's avatar, while the caller is in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_id: Option<Uuid>,
    /// The other participant of a direct conversation (absent for groups), so a client can
    /// title it without loading the details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    pub last_message: Option<Message>,
}

/// The other person in a direct conversation: `{user_id, username, display_name}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Peer {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
}

impl Conversation {
    /// A conversation from a row of `id, is_group, name, created_by, created_at, last_seq,
    /// last_activity_at, blocked, avatar_id`, with `participants`.
    fn from_row(c: &tokio_postgres::Row, participants: Vec<Participant>) -> Self {
        Self {
            id: c.get("id"),
            is_group: c.get("is_group"),
            name: c.get("name"),
            created_by: c.get("created_by"),
            created_at: c.get("created_at"),
            last_seq: c.get("last_seq"),
            last_activity_at: c.get("last_activity_at"),
            blocked: c.get("blocked"),
            avatar_id: c.get("avatar_id"),
            participants,
        }
    }
}

/// Loads a conversation with its current participants, or `None` if it does not exist —
/// without presence: as live frames carry it to every participant alike.
///
/// Errors: the queries fail.
pub async fn load_conversation(
    db: &impl Traced,
    id: Uuid,
) -> Result<Option<Conversation>, tokio_postgres::Error> {
    load(db, id, None).await
}

/// [`load_conversation`] as `reader` gets it in an answer: with each participant's presence,
/// except of those who block the reader (issue 20).
///
/// Errors: the queries fail.
pub async fn load_conversation_for(
    db: &impl Traced,
    id: Uuid,
    reader: Uuid,
) -> Result<Option<Conversation>, tokio_postgres::Error> {
    load(db, id, Some(reader)).await
}

async fn load(
    db: &impl Traced,
    id: Uuid,
    reader: Option<Uuid>,
) -> Result<Option<Conversation>, tokio_postgres::Error> {
    let Some(c) = db
        .query_opt_t(
            "SELECT id, is_group, name, created_by, created_at, last_seq, last_activity_at,
                    blocked, avatar_id
             FROM messaging.conversations WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let participants = db
        .query_t(
            "SELECT p.user_id, u.username, u.display_name, p.role, p.joined_at, p.last_read_seq,
                    p.last_delivered_seq,
                    CASE WHEN $2::uuid IS NULL OR EXISTS (
                             SELECT 1 FROM messaging.blocks b
                             WHERE b.blocker_id = p.user_id AND b.blocked_id = $2)
                         THEN NULL ELSE coalesce(pr.online, false) END AS online,
                    CASE WHEN $2::uuid IS NULL OR EXISTS (
                             SELECT 1 FROM messaging.blocks b
                             WHERE b.blocker_id = p.user_id AND b.blocked_id = $2)
                         THEN NULL ELSE pr.last_seen_at END AS last_seen_at
             FROM messaging.participants p
             LEFT JOIN auth.public_profiles u ON u.id = p.user_id
             LEFT JOIN messaging.presence pr ON pr.user_id = p.user_id
             WHERE p.conversation_id = $1 AND p.left_at IS NULL
             ORDER BY p.joined_at, p.user_id",
            &[&id, &reader],
        )
        .await?
        .iter()
        .map(|r| Participant {
            user_id: r.get("user_id"),
            username: r.get("username"),
            display_name: r.get("display_name"),
            role: r.get("role"),
            joined_at: r.get("joined_at"),
            last_read_seq: r.get("last_read_seq"),
            last_delivered_seq: r.get("last_delivered_seq"),
            online: r.get("online"),
            last_seen_at: r.get("last_seen_at"),
        })
        .collect();
    Ok(Some(Conversation::from_row(&c, participants)))
}

/// The conversation as a former participant last saw it (DESIGN.md §7): its name and roster
/// as of their departure (kept in their participant row when it ended, migrations/messaging
/// V4), `last_seq` and `last_activity_at` of the departure, no presence, and the others' read
/// markers as they were then. `None` unless `user_id` is a former participant.
///
/// Errors: the queries fail.
pub async fn load_as_left(
    db: &impl Traced,
    id: Uuid,
    user_id: Uuid,
) -> Result<Option<Conversation>, tokio_postgres::Error> {
    let Some(c) = db
        .query_opt_t(
            "SELECT c.id, c.is_group, p.left_name AS name, c.created_by, c.created_at,
                    p.visible_to_seq AS last_seq, p.left_at AS last_activity_at, c.blocked,
                    NULL::uuid AS avatar_id
             FROM messaging.participants p
             JOIN messaging.conversations c ON c.id = p.conversation_id
             WHERE p.conversation_id = $1 AND p.user_id = $2 AND p.left_at IS NOT NULL",
            &[&id, &user_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let participants = left_roster(db, id, user_id).await?;
    Ok(Some(Conversation::from_row(&c, participants)))
}

/// The roster `user_id` saw when their membership of `conversation_id` ended, by joining
/// time, with the read markers of then and no presence; empty for a current participant.
///
/// Errors: the query fails.
pub async fn left_roster(
    db: &impl Traced,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<Participant>, tokio_postgres::Error> {
    Ok(db
        .query_t(
            "SELECT r.user_id, u.username, u.display_name, r.role, r.joined_at, r.last_read_seq,
                    r.last_delivered_seq
             FROM messaging.participants p
             CROSS JOIN LATERAL jsonb_to_recordset(coalesce(p.left_roster, '[]'::jsonb))
                 AS r(user_id uuid, role text, joined_at timestamptz, last_read_seq bigint,
                      last_delivered_seq bigint)
             LEFT JOIN auth.public_profiles u ON u.id = r.user_id
             WHERE p.conversation_id = $1 AND p.user_id = $2 AND p.left_at IS NOT NULL
             ORDER BY r.joined_at, r.user_id",
            &[&conversation_id, &user_id],
        )
        .await?
        .iter()
        .map(|r| Participant {
            user_id: r.get("user_id"),
            username: r.get("username"),
            display_name: r.get("display_name"),
            role: r.get("role"),
            joined_at: r.get("joined_at"),
            last_read_seq: r.get("last_read_seq"),
            last_delivered_seq: r
                .get::<_, Option<i64>>("last_delivered_seq")
                .unwrap_or_default(),
            online: None,
            last_seen_at: None,
        })
        .collect())
}
