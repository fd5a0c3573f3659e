-- Issue 20: what people do with messages — reactions, pins, edit history, marking a
-- conversation unread, blocking.

-- One row per user per emoji per message. A message's counts are kept beside it
-- (messages.reactions, below) so a history page reads no extra rows; these rows answer
-- "reacted by me" and are the truth the counts are recomputed from.
CREATE TABLE messaging.reactions (
    message_id uuid NOT NULL REFERENCES messaging.messages (id) ON DELETE CASCADE,
    emoji      text NOT NULL CHECK (octet_length(emoji) BETWEEN 1 AND 64),
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, emoji, user_id)
);
CREATE INDEX reactions_user_idx ON messaging.reactions (user_id, message_id);

ALTER TABLE messaging.messages
    -- [{"emoji": "👍", "count": 2}, …] in the order each emoji was first used; NULL: none.
    ADD COLUMN reactions jsonb,
    -- Pinned to its conversation (by whom, when); NULL: not pinned.
    ADD COLUMN pinned_at timestamptz,
    ADD COLUMN pinned_by uuid,
    ADD CONSTRAINT messages_pinned_by_check CHECK ((pinned_at IS NULL) = (pinned_by IS NULL));
CREATE INDEX messages_pinned_idx ON messaging.messages (conversation_id, pinned_at)
    WHERE pinned_at IS NOT NULL;

-- Earlier texts of an edited message, oldest first: version 1 is what was sent. Removed
-- with the message's content when it is deleted.
CREATE TABLE messaging.message_versions (
    message_id uuid NOT NULL REFERENCES messaging.messages (id) ON DELETE CASCADE,
    version    integer NOT NULL CHECK (version > 0),
    content    text NOT NULL,
    -- When this text was written (the send, or the edit that made it).
    written_at timestamptz NOT NULL,
    PRIMARY KEY (message_id, version)
);

-- "Mark unread from seq": the conversation counts as unread from here for its participant,
-- without moving the read marker (which others see as receipts) backward. Cleared when the
-- participant reads up to it again.
ALTER TABLE messaging.participants ADD COLUMN unread_from_seq bigint
    CHECK (unread_from_seq > 0);

-- Blocks: blocker no longer hears from blocked. Direct conversations between the two turn
-- read-only both ways (conversations.blocked, set under the conversation's row lock, which
-- every send takes: a send after the block commits is refused).
CREATE TABLE messaging.blocks (
    blocker_id uuid NOT NULL,
    blocked_id uuid NOT NULL CHECK (blocked_id <> blocker_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id)
);
CREATE INDEX blocks_blocked_idx ON messaging.blocks (blocked_id, blocker_id);
ALTER TABLE messaging.conversations
    ADD COLUMN blocked boolean NOT NULL DEFAULT false CHECK (NOT (blocked AND is_group));
