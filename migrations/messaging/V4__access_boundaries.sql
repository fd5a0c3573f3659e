-- Access boundaries (issue 14): sockets bound to their access token's lifetime, former
-- participants frozen at their departure, membership checked by the appending statement,
-- and per-user counters for every rate and byte budget.

-- A ticket remembers when the access token that asked for it expires: the socket it opens
-- lives no longer unless the client re-presents a fresh token on it.
ALTER TABLE messaging.ws_tickets
    ADD COLUMN token_expires_at timestamptz NOT NULL DEFAULT now();

-- What a participant saw when their membership ended: the group's name and roster then.
-- A former participant is shown this, never the conversation's later state. Cleared on
-- rejoin. Rows that ended before this migration get the state of now, the best there is.
ALTER TABLE messaging.participants
    ADD COLUMN left_name   text,
    ADD COLUMN left_roster jsonb;
UPDATE messaging.participants p
SET left_name = c.name,
    left_roster = (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'user_id', o.user_id, 'role', o.role, 'joined_at', o.joined_at,
                        'last_read_seq', least(o.last_read_seq, p.visible_to_seq))
                        ORDER BY o.joined_at, o.user_id), '[]'::jsonb)
                   FROM messaging.participants o
                   WHERE o.conversation_id = p.conversation_id AND o.user_id <> p.user_id
                     AND o.visible_from_seq <= p.visible_to_seq
                     AND (o.visible_to_seq IS NULL OR o.visible_to_seq >= p.visible_to_seq))
FROM messaging.conversations c
WHERE c.id = p.conversation_id AND p.left_at IS NOT NULL;

-- Whether a user is a current participant, as of the moment it is called. VOLATILE and
-- PL/pgSQL (never inlined), so every call takes a fresh snapshot (PostgreSQL docs §38.7,
-- "Function Volatility Categories"). The appending statement calls it in the WHERE clause of
-- its UPDATE of the conversation row: when that UPDATE had to wait for a concurrent removal
-- holding the row, the recheck of the updated row (READ COMMITTED, docs §13.2.1) calls it
-- again and sees the removal, so a send never lands after its sender's removal.
CREATE FUNCTION messaging.is_current_participant(p_conversation_id uuid, p_user_id uuid)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM messaging.participants
                   WHERE conversation_id = p_conversation_id AND user_id = p_user_id
                     AND left_at IS NULL);
END
$$;

-- Fixed-window counters per user and budget ('send': messages; 'ticket': WebSocket tickets;
-- 'upload_bytes': bytes uploaded), shared by every instance. UNLOGGED: rebuilt from nothing
-- after a crash, no WAL, never needed on a replica. Replaces send_counters, which stays for
-- the previous release's pods during a rolling update (a later migration drops it).
CREATE UNLOGGED TABLE messaging.user_counters (
    user_id      uuid NOT NULL,
    budget       text NOT NULL,
    window_start timestamptz NOT NULL,
    amount       bigint NOT NULL,
    PRIMARY KEY (user_id, budget)
);

-- A user's stored bytes (the total upload quota) are summed over their attachments.
CREATE INDEX attachments_uploader_idx ON messaging.attachments (uploader_id);
