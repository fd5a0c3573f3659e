-- Revisions for gapless live delivery and resume, and presence.

-- Every stored change to a conversation's history — a message appended (text, file, system),
-- edited or deleted — takes the next revision of that conversation. `seq` numbers messages
-- (and drives unread counts); `rev` numbers changes, so a client that has seen revision r
-- can be sent exactly what changed after it, edits and deletes included.
ALTER TABLE messaging.conversations ADD COLUMN last_rev bigint NOT NULL DEFAULT 0;
ALTER TABLE messaging.messages
    ADD COLUMN rev bigint NOT NULL DEFAULT 0,          -- revision of the latest change
    ADD COLUMN created_rev bigint NOT NULL DEFAULT 0;  -- revision of the append
UPDATE messaging.messages SET rev = seq, created_rev = seq;
UPDATE messaging.conversations SET last_rev = last_seq;
CREATE INDEX messages_rev_idx ON messaging.messages (conversation_id, rev);

-- Presence: one row per user who ever connected. last_seen_at is when they last went
-- offline. Durable (logged), unlike the socket bookkeeping below.
CREATE TABLE messaging.presence (
    user_id      uuid PRIMARY KEY,
    online       boolean NOT NULL,
    last_seen_at timestamptz,
    changed_at   timestamptz NOT NULL DEFAULT now()
);

-- Which instance holds which user's sockets, and whether that instance is alive. UNLOGGED:
-- after a crash of the primary both are empty, as are the sockets they describe.
CREATE UNLOGGED TABLE messaging.instances (
    id           text PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL
);
CREATE UNLOGGED TABLE messaging.presence_sockets (
    instance_id  text NOT NULL,
    conn_id      bigint NOT NULL,
    user_id      uuid NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, conn_id)
);
CREATE INDEX presence_sockets_user_idx ON messaging.presence_sockets (user_id);
