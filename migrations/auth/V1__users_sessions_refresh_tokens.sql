-- Auth schema: accounts, sessions (one per login: a refresh token family) and refresh tokens.
-- Runs as switchboard_auth, the owner of schema auth (postgres/init.sql).

CREATE TABLE auth.users (
    id            uuid PRIMARY KEY,                 -- UUIDv7
    username      text NOT NULL,
    email         text NOT NULL,
    display_name  text NOT NULL,
    password_hash text NOT NULL,                    -- bcrypt, $2b$
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz                       -- soft delete
);
-- Case-insensitive uniqueness; the constraint names are mapped to 409 answers in code.
CREATE UNIQUE INDEX users_username_key ON auth.users (lower(username));
CREATE UNIQUE INDEX users_email_key ON auth.users (lower(email));

-- A session is one login on one device: the family of refresh tokens that descends from it.
CREATE TABLE auth.sessions (
    id             uuid PRIMARY KEY,                -- UUIDv7, the access token's `sid`
    user_id        uuid NOT NULL REFERENCES auth.users (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,            -- absolute lifetime
    user_agent     text,
    ip             text,
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'reuse', 'revoked', 'password', 'deleted'))
);
CREATE INDEX sessions_user_active_idx ON auth.sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens are stored only as SHA-256 hashes. A token that has been exchanged keeps its
-- row with rotated_at set, so presenting it again is recognised as reuse (RFC 9700 §4.14).
CREATE TABLE auth.refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id uuid NOT NULL REFERENCES auth.sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);

-- The only part of auth the messaging service may read (DESIGN.md §1): no hashes, no emails,
-- no tokens. The view runs with its owner's rights, so SELECT on it is all messaging needs.
CREATE VIEW auth.public_profiles AS
    SELECT id, username, display_name, deleted_at IS NULL AS active
    FROM auth.users;

GRANT USAGE ON SCHEMA auth TO switchboard_messaging;
GRANT SELECT ON auth.public_profiles TO switchboard_messaging;
