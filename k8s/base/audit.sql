-- The audit trail's home (issue 18): the schema `audit`, owned by the NOLOGIN role
-- switchboard_audit, of which no service role is a member. The auth service's role may
-- INSERT and SELECT audit.events and nothing else: it owns neither the table (an owner can
-- disable triggers, re-grant itself UPDATE, drop it) nor the schema (a schema's owner may drop
-- anything in it; PostgreSQL docs, DROP TABLE and §5.9 Schemas). Each row carries the hash of
-- the one before, so even a superuser's edit shows (audit.first_break()).
--
-- Run by the database bootstrap as a superuser, after the roles exist: postgres/init.sql
-- (local stack, test stack, compose) and CloudNativePG's postInitApplicationSQLRefs
-- (k8s/base/audit.sql is this file's copy, checked equal by scripts/validate_deploy.py).
-- Pure SQL, no psql commands (CloudNativePG runs it as one script); idempotent.

SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS audit AUTHORIZATION switchboard_audit;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
SET ROLE switchboard_audit;

CREATE TABLE IF NOT EXISTS audit.events (
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
CREATE INDEX IF NOT EXISTS events_user_idx ON audit.events (user_id, pos DESC);

-- SHA-256 over the previous hash and the row's fields as a JSON array (jsonb's text form is
-- canonical, so the same fields always hash the same).
CREATE OR REPLACE FUNCTION audit.row_hash(prev bytea, pos bigint, at timestamptz, kind text,
                                          user_id uuid, session_id uuid, ip text,
                                          user_agent text, detail text)
    RETURNS bytea LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(prev || convert_to(jsonb_build_array(
        pos, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), kind, user_id,
        session_id, ip, user_agent, detail)::text, 'UTF8'))
$$;

-- Links a new row to the chain: whatever the inserter gave, `pos`, `prev_hash` and
-- `row_hash` are computed here. Inserts take turns (a transaction-level advisory lock, held
-- to commit), so each sees the last committed row as its predecessor.
CREATE OR REPLACE FUNCTION audit.chain() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last audit.events%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('audit.events'));
    SELECT * INTO last FROM audit.events ORDER BY pos DESC LIMIT 1;
    NEW.pos := coalesce(last.pos, 0) + 1;
    NEW.prev_hash := coalesce(last.row_hash, decode(repeat('00', 32), 'hex'));
    NEW.row_hash := audit.row_hash(NEW.prev_hash, NEW.pos, NEW.at, NEW.kind, NEW.user_id,
                                   NEW.session_id, NEW.ip, NEW.user_agent, NEW.detail);
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER events_chain BEFORE INSERT ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.chain();

-- Even the owner's and a superuser's ordinary UPDATE, DELETE and TRUNCATE are refused (the
-- hash chain shows whoever goes around this).
CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- The first row whose hash or link does not check out, or NULL: SELECT audit.first_break().
-- (Removing the newest rows leaves a shorter valid chain; compare with the chain head the
-- auth service logs every minute.)
CREATE OR REPLACE FUNCTION audit.first_break() RETURNS bigint LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pos FROM (
        SELECT pos, prev_hash, row_hash,
               lag(row_hash) OVER (ORDER BY pos) AS before,
               lag(pos) OVER (ORDER BY pos) AS before_pos,
               audit.row_hash(prev_hash, pos, at, kind, user_id, session_id, ip,
                              user_agent, detail) AS recomputed
        FROM audit.events
    ) c
    WHERE row_hash <> recomputed
       OR prev_hash <> coalesce(before, decode(repeat('00', 32), 'hex'))
       OR pos <> coalesce(before_pos, 0) + 1
    ORDER BY pos LIMIT 1
$$;

RESET ROLE;
GRANT USAGE ON SCHEMA audit TO switchboard_auth;
GRANT SELECT, INSERT ON audit.events TO switchboard_auth;
RESET client_min_messages;
