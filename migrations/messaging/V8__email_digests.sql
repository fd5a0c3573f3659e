-- Mail for missed messages (issue 19): one digest per conversation window, through an
-- outbox like the auth service's (src/platform/mail.rs delivers it).

CREATE TABLE messaging.mail_outbox (
    id               uuid PRIMARY KEY,              -- UUIDv7
    created_at       timestamptz NOT NULL DEFAULT now(),
    kind             text NOT NULL,                 -- what caused it (digest)
    recipient        text NOT NULL,
    subject          text NOT NULL,
    body_text        text,
    body_html        text,
    message_id       text NOT NULL,                 -- RFC 5322 Message-ID, without brackets
    list_unsubscribe text,                          -- RFC 8058 one-click URL
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    last_error       text,
    CHECK (sent_at IS NOT NULL OR (body_text IS NOT NULL AND body_html IS NOT NULL))
);
CREATE INDEX mail_outbox_due_idx ON messaging.mail_outbox (next_attempt_at) WHERE sent_at IS NULL;

-- A digest waiting for its time: the window of a conversation's messages a user has not
-- read (first_seq..last_seq), mailed at due_at if they are still unread and the user is
-- still away. One row per user and conversation: later messages widen the window.
CREATE TABLE messaging.email_digests (
    user_id         uuid NOT NULL,
    conversation_id uuid NOT NULL REFERENCES messaging.conversations (id) ON DELETE CASCADE,
    first_seq       bigint NOT NULL,
    last_seq        bigint NOT NULL,
    due_at          timestamptz NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);
CREATE INDEX email_digests_due_idx ON messaging.email_digests (due_at);
