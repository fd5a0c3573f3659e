-- Issue 20: message priority, delivery receipts, forwarding.

-- Set by the sender at send time; an urgent message notifies through a mute (never when the
-- recipient blocks the sender).
ALTER TABLE messaging.messages
    ADD COLUMN priority text NOT NULL DEFAULT 'normal'
        CHECK (priority IN ('normal', 'important', 'urgent')),
    -- A forwarded copy: who wrote the original and when, and its conversation when every
    -- participant of this one could see the original as it was forwarded.
    ADD COLUMN forwarded_from jsonb;

-- Delivered marker beside the read marker: every seq up to it reached one of the
-- participant's devices (acknowledged over the socket, or fetched). Never behind the read
-- marker (reading implies delivery).
ALTER TABLE messaging.participants
    ADD COLUMN last_delivered_seq bigint NOT NULL DEFAULT 0 CHECK (last_delivered_seq >= 0);

-- When each marker move happened, for receipts with times: the time message `seq` was read
-- (delivered) by a user is that of the first move of their read (delivered or read) marker
-- to a seq at or past it. Kept 90 days (the notification worker's sweep).
CREATE TABLE messaging.receipt_marks (
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('delivered', 'read')),
    seq             bigint NOT NULL CHECK (seq > 0),
    at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id, kind, seq)
);
CREATE INDEX receipt_marks_at_idx ON messaging.receipt_marks (at);
