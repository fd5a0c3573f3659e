-- Groups with membership periods, system messages, edits and deletes, full-text search,
-- attachments (chunked bytea, so they replicate), avatars, and the per-user send counter.

-- A participant row outlives the membership: after leaving or removal it keeps the read
-- marker and the visible range [visible_from_seq, visible_to_seq] of history. Rejoining
-- starts a new range at the rejoin.
ALTER TABLE messaging.participants
    ADD COLUMN visible_from_seq bigint NOT NULL DEFAULT 1 CHECK (visible_from_seq >= 1),
    ADD COLUMN visible_to_seq   bigint,
    ADD COLUMN left_at          timestamptz,
    ADD CONSTRAINT participants_left_consistent CHECK ((left_at IS NULL) = (visible_to_seq IS NULL));
CREATE INDEX participants_current_idx ON messaging.participants (conversation_id)
    WHERE left_at IS NULL;

-- Attachments: metadata plus content in 256 KiB chunks, so a range request reads only the
-- chunks it needs. conversation_id is NULL for avatars.
CREATE TABLE messaging.attachments (
    id              uuid PRIMARY KEY,
    conversation_id uuid REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    uploader_id     uuid NOT NULL,
    filename        text NOT NULL,
    content_type    text NOT NULL,              -- sniffed from the bytes, not the client's word
    size            bigint NOT NULL CHECK (size >= 0),
    sha256          bytea NOT NULL CHECK (length(sha256) = 32),
    chunk_size      integer NOT NULL CHECK (chunk_size > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE messaging.attachment_chunks (
    attachment_id uuid NOT NULL REFERENCES messaging.attachments (id) ON DELETE CASCADE,
    n             integer NOT NULL CHECK (n >= 0),
    data          bytea NOT NULL,
    PRIMARY KEY (attachment_id, n)
);

CREATE TABLE messaging.avatars (
    user_id       uuid PRIMARY KEY,
    attachment_id uuid NOT NULL REFERENCES messaging.attachments (id) ON DELETE CASCADE,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- System messages carry what happened (action, actor, users, name) in meta; file messages
-- point at their attachment. Full-text search over content: the 'simple' configuration
-- (no stemming, no stop words) treats every language alike. A deleted message has NULL
-- content, so it leaves the index with its text.
ALTER TABLE messaging.messages
    ADD COLUMN meta          jsonb,
    ADD COLUMN attachment_id uuid REFERENCES messaging.attachments (id) ON DELETE SET NULL,
    ADD COLUMN search        tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', coalesce(content, ''))) STORED;
CREATE INDEX messages_search_idx ON messaging.messages USING gin (search);
CREATE INDEX messages_attachment_idx ON messaging.messages (attachment_id)
    WHERE attachment_id IS NOT NULL;

-- Fixed-window send counter per user, shared by every messaging instance. UNLOGGED: it is
-- rebuilt from nothing after a crash, writes no WAL, and never needs to reach a replica.
CREATE UNLOGGED TABLE messaging.send_counters (
    user_id      uuid PRIMARY KEY,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL
);
