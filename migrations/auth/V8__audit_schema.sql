-- The audit trail leaves the auth schema (issue 18: "the service role may insert and read,
-- never update or delete"). In auth, this role owned the table and the schema, and an owner
-- can disable triggers, grant itself UPDATE back or drop the table. Its new home, audit.events,
-- is made by the database bootstrap (postgres/audit.sql) and owned by switchboard_audit; this
-- role keeps INSERT and SELECT. The rows written so far move there in order, which rebuilds
-- the same chain (the hash covers the fields and position, not the table's name).
INSERT INTO audit.events (at, kind, user_id, session_id, ip, user_agent, detail)
SELECT at, kind, user_id, session_id, ip, user_agent, detail
FROM auth.audit_events ORDER BY pos;

DROP TABLE auth.audit_events;
DROP FUNCTION auth.audit_first_break();
DROP FUNCTION auth.audit_chain();
DROP FUNCTION auth.audit_refuse_change();
DROP FUNCTION auth.audit_row_hash(bytea, bigint, timestamptz, text, uuid, uuid, text, text, text);
