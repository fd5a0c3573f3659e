-- Mentions, notification preferences, the notification feed and the durable work behind
-- pushes and mail (issue 19).

-- Who a message mentions: participants named `@username` (resolved when it is written, so
-- a later rename or departure does not change it), and whether it says `@all` (groups).
ALTER TABLE messaging.messages
    ADD COLUMN mentions uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN mentions_all boolean NOT NULL DEFAULT false;
-- Unread `@all` messages per conversation are counted from here.
CREATE INDEX messages_mentions_all_idx ON messaging.messages (conversation_id, seq)
    WHERE mentions_all;

-- One row per mentioned participant per message: unread-mention counts are an index range.
CREATE TABLE messaging.mentions (
    user_id         uuid NOT NULL,
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
);
-- An edit or delete replaces a message's rows.
CREATE INDEX mentions_message_idx ON messaging.mentions (conversation_id, seq);

-- Per conversation, per participant: how loudly (NULL: the user's default) and a mute.
ALTER TABLE messaging.participants
    ADD COLUMN notify_level text CHECK (notify_level IN ('all', 'mentions', 'none')),
    ADD COLUMN muted_until timestamptz;

-- Per user: defaults, quiet hours in their time zone, which channels are on.
CREATE TABLE messaging.notification_settings (
    user_id        uuid PRIMARY KEY,
    -- The level of direct conversations and of groups when a conversation sets none.
    direct_level   text NOT NULL DEFAULT 'all' CHECK (direct_level IN ('all', 'mentions', 'none')),
    group_level    text NOT NULL DEFAULT 'mentions' CHECK (group_level IN ('all', 'mentions', 'none')),
    push           boolean NOT NULL DEFAULT true,
    email          boolean NOT NULL DEFAULT true,
    -- Whether a push or mail may carry the start of the message (else only who and where).
    previews       boolean NOT NULL DEFAULT true,
    quiet_start    time,
    quiet_end      time,
    time_zone      text NOT NULL DEFAULT 'UTC',
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

-- The notification feed: what happened while one was away (mentions, for now).
CREATE TABLE messaging.notifications (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('mention')),
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    message_id      uuid NOT NULL REFERENCES messaging.messages (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    actor_id        uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    UNIQUE (user_id, message_id, kind)
);
CREATE INDEX notifications_user_idx ON messaging.notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread_idx ON messaging.notifications (user_id) WHERE read_at IS NULL;

-- The outbox of notification work: one row per appended message, written in its
-- transaction; a worker in each messaging instance claims due rows (FOR UPDATE SKIP
-- LOCKED), works out who is told and how, and deletes the row.
CREATE TABLE messaging.notify_queue (
    message_id      uuid PRIMARY KEY REFERENCES messaging.messages (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL,
    seq             bigint NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notify_queue_due_idx ON messaging.notify_queue (due_at);
