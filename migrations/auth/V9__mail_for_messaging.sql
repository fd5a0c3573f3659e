-- Mail from the messaging service (issue 19: digests of missed messages).
--
-- Every outbox may carry a one-click unsubscribe URL (RFC 8058), sent as List-Unsubscribe
-- with List-Unsubscribe-Post (the outbox worker is shared: src/platform/mail.rs).
ALTER TABLE auth.mail_outbox ADD COLUMN list_unsubscribe text;

-- Where messaging may mail a user: the verified address of an active account, nothing else
-- (no unverified address ever receives digests, and messaging reads no other account data).
CREATE FUNCTION auth.mail_address(p_user_id uuid)
    RETURNS TABLE (email text, display_name text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT email, display_name FROM auth.users
    WHERE id = p_user_id AND deleted_at IS NULL AND email_verified_at IS NOT NULL
$$;
REVOKE ALL ON FUNCTION auth.mail_address(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auth.mail_address(uuid) TO switchboard_messaging;
