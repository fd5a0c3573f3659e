-- Refresh token grace window, idle expiry, per-login failure limit, and user search.

-- The hash of the token this one was exchanged for. A token presented again within the grace
-- window gets that same successor back, provided the successor has not been used yet.
ALTER TABLE auth.refresh_tokens ADD COLUMN successor_hash bytea
    CHECK (successor_hash IS NULL OR length(successor_hash) = 32);

ALTER TABLE auth.sessions DROP CONSTRAINT sessions_revoked_reason_check;
ALTER TABLE auth.sessions ADD CONSTRAINT sessions_revoked_reason_check
    CHECK (revoked_reason IN ('logout', 'reuse', 'revoked', 'password', 'deleted', 'expired'));

-- Failed logins per login name (lower-cased username or email, whether or not an account
-- has it, so a lockout tells nothing about which accounts exist).
CREATE TABLE auth.login_failures (
    login           text PRIMARY KEY,
    failures        integer NOT NULL CHECK (failures > 0),
    first_failed_at timestamptz NOT NULL,
    locked_until    timestamptz
);

-- Prefix search on username and display name (GET /auth/users?query=): btree with
-- text_pattern_ops serves `lower(x) LIKE 'prefix%'`; deleted accounts are not indexed.
CREATE INDEX users_username_prefix_idx ON auth.users (lower(username) text_pattern_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX users_display_name_prefix_idx ON auth.users (lower(display_name) text_pattern_ops)
    WHERE deleted_at IS NULL;
