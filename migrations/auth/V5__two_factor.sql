-- Two-factor sign-in with TOTP (RFC 6238; issue 18): the shared secret per account, the
-- recovery codes, and the short-lived challenge between the password and the code.

-- One authenticator per account. `confirmed_at` NULL: enrolment started, not yet proven by
-- a first code (sign-in does not ask for it). `last_step` is the newest 30-second time step
-- a code was accepted for: a code for that step or an older one is a replay (RFC 6238 §5.2).
CREATE TABLE auth.totp (
    user_id      uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    secret       bytea NOT NULL CHECK (length(secret) >= 20),
    created_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    last_step    bigint NOT NULL DEFAULT 0
);

-- Ten single-use recovery codes, made when TOTP is confirmed, stored only as SHA-256 hashes
-- (each carries 50 random bits).
CREATE TABLE auth.recovery_codes (
    user_id   uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
    used_at   timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- The second step of a sign-in: after the password, a challenge (256 random bits, stored as
-- a hash) answered with a code within its lifetime and a few attempts.
CREATE TABLE auth.mfa_challenges (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    used_at    timestamptz
);
CREATE INDEX mfa_challenges_expires_idx ON auth.mfa_challenges (expires_at);
