-- Messaging schema: conversations, participants with read markers, messages with a
-- per-conversation gapless seq, and single-use WebSocket tickets.
-- Runs as switchboard_messaging, the owner of schema messaging (postgres/init.sql).
-- User ids refer to auth.users but carry no foreign key: each service owns its schema, and
-- existence is checked through auth.public_profiles when users are added.

CREATE TABLE messaging.conversations (
    id               uuid PRIMARY KEY,              -- UUIDv7
    is_group         boolean NOT NULL,
    name             text,
    -- "<smaller user id>:<larger user id>" for a direct conversation: one per pair.
    direct_key       text UNIQUE,
    created_by       uuid NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Highest seq handed out. Incremented under the row lock in the sending transaction, so
    -- seq is gapless: a rolled-back send rolls the increment back too.
    last_seq         bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    CHECK (is_group = (direct_key IS NULL))
);

CREATE TABLE messaging.participants (
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    role            text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    -- Read marker: the participant has read every seq <= last_read_seq.
    last_read_seq   bigint NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX participants_user_idx ON messaging.participants (user_id, conversation_id);

CREATE TABLE messaging.messages (
    id              uuid PRIMARY KEY,               -- UUIDv7
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL CHECK (seq > 0),
    sender_id       uuid,                           -- NULL for system messages
    kind            text NOT NULL CHECK (kind IN ('text', 'file', 'system')),
    content         text,                           -- NULL once deleted
    reply_to        uuid REFERENCES messaging.messages (id),
    client_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz,
    CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq)
);
-- A client retrying a send with the same client_id gets the same message back.
CREATE UNIQUE INDEX messages_client_id_key ON messaging.messages (conversation_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

-- Single-use tickets for opening a WebSocket (DESIGN.md §3), stored as SHA-256 hashes on the
-- primary so any messaging instance can redeem a ticket another instance issued.
CREATE TABLE messaging.ws_tickets (
    ticket_hash bytea PRIMARY KEY CHECK (length(ticket_hash) = 32),
    user_id     uuid NOT NULL,
    session_id  uuid NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ws_tickets_expires_idx ON messaging.ws_tickets (expires_at);
