-- What the messaging service may ask of sessions, and sign-in attempts counted per account.

-- Sessions that ended recently are looked up by when they ended (the messaging instances
-- load them at start and after a LISTEN reconnect, so a missed NOTIFY is never a hole).
CREATE INDEX sessions_revoked_at_idx ON auth.sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- The messaging role's narrow, read-only way to ask about a session (issue 14): never the
-- tables. SECURITY DEFINER functions run with the rights of their owner (switchboard_auth);
-- a fixed search_path keeps a caller's objects out of them (PostgreSQL docs, CREATE FUNCTION,
-- "Writing SECURITY DEFINER Functions Safely").

-- True while the session is active: not ended, not past its absolute lifetime, and its
-- account not deleted.
CREATE FUNCTION auth.session_active(p_session_id uuid, p_user_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
        WHERE s.id = p_session_id AND s.user_id = p_user_id
          AND s.revoked_at IS NULL AND s.expires_at > now() AND u.deleted_at IS NULL)
$$;

-- Sessions ended after `p_since` — at most a day back, which outlasts any access token —
-- with when they ended.
CREATE FUNCTION auth.sessions_ended_since(p_since timestamptz)
    RETURNS TABLE (session_id uuid, ended_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT id, revoked_at FROM auth.sessions
    WHERE revoked_at > greatest(p_since, now() - interval '1 day')
$$;

REVOKE ALL ON FUNCTION auth.session_active(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.sessions_ended_since(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.session_active(uuid, uuid) TO switchboard_messaging;
GRANT EXECUTE ON FUNCTION auth.sessions_ended_since(timestamptz) TO switchboard_messaging;

-- Password attempts, counted before bcrypt runs (so concurrent guesses cannot all slip past
-- the limit) and keyed on the account ('user:<uuid>': its username and email share one
-- count) or, for a name no account has, on that name ('login:<lower-cased name>'), so a
-- lockout looks the same either way. Every endpoint that checks a password counts here.
-- (auth.login_failures, the per-name count it replaces, stays for the previous release's
-- pods during a rolling update; a later migration drops it.)
CREATE TABLE auth.password_attempts (
    key          text PRIMARY KEY,
    attempts     integer NOT NULL CHECK (attempts > 0),
    window_start timestamptz NOT NULL,
    locked_until timestamptz
);
