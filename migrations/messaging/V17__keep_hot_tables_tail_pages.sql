-- Issue 16: autovacuum no longer gives the empty pages at the end of the hot tables back to
-- the operating system (the storage parameter `vacuum_truncate`; PostgreSQL docs, CREATE
-- TABLE, "Storage Parameters", and VACUUM, "TRUNCATE").
--
-- Every send rewrites a row of `conversations` (its `last_seq`, `last_rev`), of
-- `participants` (the sender's read marker) and of `user_counters` (the send budget); the
-- notification worker fills and empties `notify_queue` and `email_digests`. Autovacuum
-- vacuums each of them every few seconds, and whenever the last pages hold only dead rows it
-- truncates them. That needs the table's ACCESS EXCLUSIVE lock, which vacuum never queues
-- for: it tries every 50 ms, for up to 5 s, and gets it only between transactions that use
-- the table; once it has it, it checks the tail pages backwards, and lets go only when it
-- notices a waiter (it looks every 20 ms). Every batch of sends locks its conversations first,
-- so it waits out each of those holds. The next sends refill the pages at once: the
-- conversations table swung between 43 and 275 pages in one run.
--
-- Measured 2026-12-04, four send-only benchmark runs on fresh stacks, alternating (A: as
-- before; B: this set by `ALTER TABLE` before the load), lining the primary's autovacuum log
-- up with NGINX's access log second by second:
-- - A: vacuums of `conversations` of 5.0 s ("0 removed": the truncation never got far)
--   five times, of `participants` up to 3.9 s; the open-loop step at 75 % of the closed
--   loop's rate refused 389 and 1562 sends: 1537 of the 1562 in the four seconds of a
--   5.0 s conversations vacuum, 383 of the 389 in the six seconds from a 2.7 s
--   participants vacuum to a 0.7 s user_counters one that truncated 111 pages;
-- - B: no vacuum of these tables over 0.3 s; the same step refused 71 and 0 sends, the 71
--   in seconds with a slow `COMMIT` (a disk stall).
-- The closed loop's rate did not move with it (2000 and 1988 sends/s in A, 2079 and 1629 in
-- B, as the host's raw insert rate moved). See docs/benchmarks/findings.md.
--
-- The price: a table keeps the size of its busiest moment (a few hundred pages here; the
-- free space inside is reused by later rows). VACUUM FULL still shrinks it, by hand.
ALTER TABLE messaging.conversations SET (vacuum_truncate = off);
ALTER TABLE messaging.participants SET (vacuum_truncate = off);
ALTER TABLE messaging.user_counters SET (vacuum_truncate = off);
ALTER TABLE messaging.notify_queue SET (vacuum_truncate = off);
ALTER TABLE messaging.email_digests SET (vacuum_truncate = off);
