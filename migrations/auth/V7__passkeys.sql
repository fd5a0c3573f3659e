-- Passkeys (WebAuthn Level 3 discoverable credentials; issue 18). One row per registered
-- credential: webauthn-rs's `Passkey` (public key, counter, backup state) as JSON, the
-- credential id apart so a sign-in finds it, a name the user chose.
CREATE TABLE auth.passkeys (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    credential_id bytea NOT NULL UNIQUE CHECK (length(credential_id) BETWEEN 16 AND 1023),
    passkey       jsonb NOT NULL,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);
CREATE INDEX passkeys_user_idx ON auth.passkeys (user_id, created_at);

-- A ceremony between its two requests (options, then the authenticator's answer): the
-- challenge and what the answer is checked against, for any instance to finish. Single-use
-- (deleted when answered) and short-lived; expired rows are swept as new ones are written.
CREATE TABLE auth.webauthn_ceremonies (
    id         uuid PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('registration', 'authentication')),
    user_id    uuid REFERENCES auth.users (id) ON DELETE CASCADE,  -- registration only
    state      jsonb NOT NULL,
    expires_at timestamptz NOT NULL,
    CHECK ((kind = 'registration') = (user_id IS NOT NULL))
);
CREATE INDEX webauthn_ceremonies_expiry_idx ON auth.webauthn_ceremonies (expires_at);

-- The passkey a session was signed in with: removing the passkey ends those sessions too.
ALTER TABLE auth.sessions
    ADD COLUMN passkey_id uuid REFERENCES auth.passkeys (id) ON DELETE SET NULL;
CREATE INDEX sessions_passkey_idx ON auth.sessions (passkey_id) WHERE passkey_id IS NOT NULL;
