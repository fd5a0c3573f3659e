-- Issue 16: autovacuum no longer gives the empty pages at the end of the hot tables back to
-- the operating system (the storage parameter `vacuum_truncate`; PostgreSQL docs, CREATE
-- TABLE, "Storage Parameters", and VACUUM, "TRUNCATE").
--
-- Every send rewrites a row of `conversations` (its `last_seq`, `last_rev`), of
-- `participants` (the sender's read marker) and of `user_counters` (the send budget); the
-- notification worker fills and empties `notify_queue` and `email_digests`. Autovacuum
-- vacuums each of them every few seconds, and whenever the last pages hold only dead rows it
-- truncates them. That needs the table's ACCESS EXCLUSIVE lock, which every send conflicts
-- with and which vacuum never queues for: it tries every 50 ms, for up to 5 s, getting it
-- only between transactions that use the table; once it has it, it checks the tail pages
-- backwards and lets go when it notices a waiter (it looks every 20 ms). Sends then refill
-- the pages: the conversations table ranged over 44–419 pages in one run.
--
-- Measured 2026-12-04 with send-only benchmark runs on fresh stacks, lining the primary's
-- autovacuum log up with NGINX's access log second by second. Four runs alternated: A as
-- before, B with this set by `ALTER TABLE` before the load.
-- - A: vacuums of `conversations` of 5.0 s five times (5 s is the limit on trying for the
--   lock, and they removed no page: most likely they never got it), of `participants` up
--   to 3.9 s. The open-loop step at 75 % of the closed loop's rate refused 389 and 1562
--   sends: 1537 of the 1562 in the four seconds of a 5.0 s conversations vacuum, 383 of
--   the 389 in the six seconds from a 2.7 s participants vacuum to a 0.7 s user_counters
--   one that truncated 111 pages.
-- - B: no vacuum of these tables over 0.1 s; the same step refused 71 and 0 sends, the 71
--   in two seconds that each held a `COMMIT` of 50-65 ms (a disk stall).
-- Four more runs with this migration refused 137, 7, 0 and 0 in that step. The closed loop
-- showed no consistent difference (0.42 and 0.44 of the raw insert rate in A, 0.47 and 0.37
-- in B). The refusals coincided with the vacuums; how a try for a lock that is never
-- queued for holds sends up is not shown. See docs/benchmarks/findings.md.
--
-- The price: a table keeps the size of its busiest moment (a few hundred pages here; the
-- free space inside is reused by later rows). VACUUM FULL still shrinks it, by hand.
ALTER TABLE messaging.conversations SET (vacuum_truncate = off);
ALTER TABLE messaging.participants SET (vacuum_truncate = off);
ALTER TABLE messaging.user_counters SET (vacuum_truncate = off);
ALTER TABLE messaging.notify_queue SET (vacuum_truncate = off);
ALTER TABLE messaging.email_digests SET (vacuum_truncate = off);
