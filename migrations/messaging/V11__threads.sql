-- Issue 20: threads. A reply can start or continue a thread under a top-level message (its
-- root); thread replies share the conversation's seq (gapless, one order for everything),
-- but the main history leaves them out and the conversation list counts them apart.

ALTER TABLE messaging.messages
    ADD COLUMN thread_root_id uuid REFERENCES messaging.messages (id),
    -- On a root: its replies, the last one's time, and who took part (root's sender first,
    -- then repliers in order of their first reply; at most 20).
    ADD COLUMN thread_reply_count integer NOT NULL DEFAULT 0 CHECK (thread_reply_count >= 0),
    ADD COLUMN thread_last_reply_at timestamptz,
    ADD COLUMN thread_participants uuid[];
-- A thread view pages its replies by seq.
CREATE INDEX messages_thread_idx ON messaging.messages (thread_root_id, seq)
    WHERE thread_root_id IS NOT NULL;
-- The list counts a conversation's thread replies apart from its main unread count.
CREATE INDEX messages_thread_replies_idx ON messaging.messages (conversation_id, seq)
    WHERE thread_root_id IS NOT NULL;

-- The threads a user follows (they wrote the root or replied) and how far they read each:
-- replies after last_read_seq by others are unread.
CREATE TABLE messaging.thread_reads (
    user_id         uuid NOT NULL,
    root_id         uuid NOT NULL REFERENCES messaging.messages (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    last_read_seq   bigint NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    PRIMARY KEY (user_id, root_id)
);
CREATE INDEX thread_reads_conversation_idx ON messaging.thread_reads (user_id, conversation_id);
