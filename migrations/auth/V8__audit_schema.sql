-- The audit trail leaves the auth schema (issue 18: "the service role may insert and read,
-- never update or delete"). In auth, this role owned the table and the schema, and an owner
-- can disable triggers, grant itself UPDATE back or drop the table. Its new home, audit.events,
-- is made by the database bootstrap (postgres/audit.sql) and owned by switchboard_audit; this
-- role keeps INSERT and SELECT. The rows written so far move there in order, which rebuilds
-- the same chain (the hash covers the fields and position, not the table's name).
--
-- Checked on the way: no writer slips in between (the old table is locked for the rest of the
-- migration), the old chain is intact (a row changed while this role owned the table would
-- otherwise be re-chained into a valid-looking trail), the new table starts empty, and the
-- copy ends in the old chain's head hash.
-- (V6 revoked this role's TRUNCATE, which LOCK in this mode needs; the table goes below.)
GRANT TRUNCATE ON auth.audit_events TO CURRENT_USER;
LOCK TABLE auth.audit_events IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    IF auth.audit_first_break() IS NOT NULL THEN
        RAISE EXCEPTION 'auth.audit_events is broken at pos %: keep it for inspection and '
            'move it by hand', auth.audit_first_break();
    END IF;
    IF EXISTS (SELECT FROM audit.events) THEN
        RAISE EXCEPTION 'audit.events is not empty: the old trail cannot be appended in order';
    END IF;
END
$$;

INSERT INTO audit.events (at, kind, user_id, session_id, ip, user_agent, detail)
SELECT at, kind, user_id, session_id, ip, user_agent, detail
FROM auth.audit_events ORDER BY pos;

DO $$
BEGIN
    IF (SELECT row_hash FROM auth.audit_events ORDER BY pos DESC LIMIT 1)
       IS DISTINCT FROM (SELECT row_hash FROM audit.events ORDER BY pos DESC LIMIT 1) THEN
        RAISE EXCEPTION 'the copied audit trail does not end in the old head hash';
    END IF;
END
$$;

DROP TABLE auth.audit_events;
DROP FUNCTION auth.audit_first_break();
DROP FUNCTION auth.audit_chain();
DROP FUNCTION auth.audit_refuse_change();
DROP FUNCTION auth.audit_row_hash(bytea, bigint, timestamptz, text, uuid, uuid, text, text, text);
