-- The notification outbox (V6) cost five WAL records per send beyond the row itself: a
-- heap insert, two index entries, and a row lock taken by the foreign key's check on the
-- message the send had just inserted (PostgreSQL docs §5.4.5: the referencing insert locks
-- the referenced row FOR KEY SHARE), then the worker's claim and delete. Two of them
-- protect nothing:
--
-- * The foreign key: the row is written in the transaction that appended the message, and
--   the worker joins each claimed row to its message, so a row no message matches (the
--   service never deletes a message row; an operator might) is claimed and deleted without
--   effect, as the cascade would have.
-- * The index on `due_at`: every row is due when written (`due_at` defaults to now(); no
--   writer sets it), so the worker takes rows in message id order (UUIDv7: time ordered,
--   RFC 9562 §5.7) through the primary key.
--
-- Measured with the group commit's statements alone (pgbench, batches of 8 and 4, the
-- worker draining the queue): 17.9 WAL records per send before, 14.9 after.
-- Dropping the foreign key locks `messaging.messages` too (ACCESS EXCLUSIVE, briefly; a
-- replica replays the lock). Behind a long transaction that wait would hold every send and
-- history read: give up after 5 s instead (this migration's transaction is rolled back and
-- the service's start retries it).
SET LOCAL lock_timeout = '5s';
ALTER TABLE messaging.notify_queue DROP CONSTRAINT notify_queue_message_id_fkey;
DROP INDEX messaging.notify_queue_due_idx;
