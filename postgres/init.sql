-- Cluster-level objects for Switchboard: the database, one login role per service and the
-- replication role. Idempotent: every statement checks before it creates, and passwords are
-- set on every run so changing them in the environment takes effect.
--
-- Variables (psql -v): db, auth_password, messaging_password, replication_password.
--
-- Least privilege (DESIGN.md §1): each service role owns only its own schema. The auth role
-- later grants the messaging role SELECT on the view auth.public_profiles (migrations/auth),
-- and nothing else of the auth schema.

SET client_min_messages = warning;

SELECT format('CREATE ROLE switchboard_auth LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchboard_auth') \gexec
SELECT format('CREATE ROLE switchboard_messaging LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchboard_messaging') \gexec
-- Owns the audit trail (postgres/audit.sql); never signs in, and no service role is a member.
SELECT format('CREATE ROLE switchboard_audit NOLOGIN NOINHERIT')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchboard_audit') \gexec
SELECT format('CREATE ROLE replicator LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') \gexec

ALTER ROLE switchboard_auth PASSWORD :'auth_password';
ALTER ROLE switchboard_messaging PASSWORD :'messaging_password';
ALTER ROLE replicator PASSWORD :'replication_password';

SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec

REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO switchboard_auth, switchboard_messaging;

\connect :"db"
SET client_min_messages = warning;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION switchboard_auth;
CREATE SCHEMA IF NOT EXISTS messaging AUTHORIZATION switchboard_messaging;
ALTER ROLE switchboard_auth IN DATABASE :"db" SET search_path = auth;
ALTER ROLE switchboard_messaging IN DATABASE :"db" SET search_path = messaging;

-- The append-only audit trail, in a schema the auth role can write to but not change.
\ir audit.sql
