-- The audit trail (issue 18): who did what to an account — sign-ins and their failures,
-- refresh-token reuse, session ends, password, email, two-factor changes, deletion — with
-- time, user, session, client address and user agent. Append-only, and hash-chained so a
-- changed or removed row is detectable: each row's `prev_hash` is the previous row's
-- `row_hash`, and `row_hash` covers its own fields and `prev_hash`.

CREATE TABLE auth.audit_events (
    pos        bigint PRIMARY KEY,                  -- place in the chain, set by the trigger
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL,
    user_id    uuid,                                -- NULL: a failed sign-in naming no account
    session_id uuid,
    ip         text,
    user_agent text,
    detail     text,
    prev_hash  bytea NOT NULL CHECK (length(prev_hash) = 32),
    row_hash   bytea NOT NULL CHECK (length(row_hash) = 32)
);
CREATE INDEX audit_events_user_idx ON auth.audit_events (user_id, pos DESC);

-- SHA-256 over the previous hash and the row's fields as a JSON array (jsonb's text form is
-- canonical, so the same fields always hash the same).
CREATE FUNCTION auth.audit_row_hash(prev bytea, pos bigint, at timestamptz, kind text,
                                    user_id uuid, session_id uuid, ip text, user_agent text,
                                    detail text)
    RETURNS bytea LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(prev || convert_to(jsonb_build_array(
        pos, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), kind, user_id,
        session_id, ip, user_agent, detail)::text, 'UTF8'))
$$;

-- Links a new row to the chain. Inserts take turns (a transaction-level advisory lock, held
-- to commit), so each sees the last committed row as its predecessor.
CREATE FUNCTION auth.audit_chain() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last auth.audit_events%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('auth.audit_events'));
    SELECT * INTO last FROM auth.audit_events ORDER BY pos DESC LIMIT 1;
    NEW.pos := coalesce(last.pos, 0) + 1;
    NEW.prev_hash := coalesce(last.row_hash, decode(repeat('00', 32), 'hex'));
    NEW.row_hash := auth.audit_row_hash(NEW.prev_hash, NEW.pos, NEW.at, NEW.kind, NEW.user_id,
                                        NEW.session_id, NEW.ip, NEW.user_agent, NEW.detail);
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_events_chain BEFORE INSERT ON auth.audit_events
    FOR EACH ROW EXECUTE FUNCTION auth.audit_chain();

-- Append-only: the service role keeps INSERT and SELECT only, and a trigger refuses every
-- UPDATE, DELETE and TRUNCATE (the table's owner could undo both; the hash chain is what
-- shows that it did).
CREATE FUNCTION auth.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'auth.audit_events is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON auth.audit_events
    FOR EACH ROW EXECUTE FUNCTION auth.audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON auth.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION auth.audit_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON auth.audit_events FROM CURRENT_USER;

-- The first row whose hash or link does not check out, or NULL: SELECT auth.audit_first_break().
-- (Removing the newest rows leaves a shorter valid chain; compare the count with what your
-- log shipping saw.)
CREATE FUNCTION auth.audit_first_break() RETURNS bigint LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pos FROM (
        SELECT pos, prev_hash, row_hash,
               lag(row_hash) OVER (ORDER BY pos) AS before,
               lag(pos) OVER (ORDER BY pos) AS before_pos,
               auth.audit_row_hash(prev_hash, pos, at, kind, user_id, session_id, ip,
                                   user_agent, detail) AS recomputed
        FROM auth.audit_events
    ) c
    WHERE row_hash <> recomputed
       OR prev_hash <> coalesce(before, decode(repeat('00', 32), 'hex'))
       OR pos <> coalesce(before_pos, 0) + 1
    ORDER BY pos LIMIT 1
$$;
