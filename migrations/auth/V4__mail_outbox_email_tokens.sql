-- The account lifecycle (issue 18): mail that is never lost, verified addresses, and the
-- single-use links that prove an address or reset a password.

-- Mail is written here in the same transaction as the change that causes it and delivered
-- by the auth instances' outbox worker (src/platform/mail.rs): a row is locked while it is
-- sent (FOR UPDATE SKIP LOCKED), so two instances never send it at once; a failed attempt
-- waits longer each time (next_attempt_at). The bodies carry single-use links, which are
-- secrets: they are cleared once the mail is sent.
CREATE TABLE auth.mail_outbox (
    id              uuid PRIMARY KEY,               -- UUIDv7
    created_at      timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,                  -- what caused it (verify_email, password_reset, …)
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body_text       text,
    body_html       text,
    message_id      text NOT NULL,                  -- RFC 5322 Message-ID, without the brackets
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_error      text,
    CHECK (sent_at IS NOT NULL OR (body_text IS NOT NULL AND body_html IS NOT NULL))
);
CREATE INDEX mail_outbox_due_idx ON auth.mail_outbox (next_attempt_at) WHERE sent_at IS NULL;

-- When the current address was proven (NULL: not yet).
ALTER TABLE auth.users ADD COLUMN email_verified_at timestamptz;

-- Links mailed to prove an address (at sign-up, and for a new address before it replaces
-- the old one) or to reset a password: 256 random bits, stored only as SHA-256 hashes,
-- single-use (used_at), expiring.
CREATE TABLE auth.email_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    email      text NOT NULL,                       -- the address the link went to
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_tokens_user_idx ON auth.email_tokens (user_id, purpose, created_at);
