-- Issue 16: every send bumps a row of each of these tables — its conversation's counters
-- (last_seq, last_rev), the sender's read marker, the sender's send budget — and autovacuum
-- counts each bump as a modification towards the next ANALYZE (at 50 + 10 % of the table's
-- rows by default; PostgreSQL docs §25.1.6). The bumps change no statistic a plan depends on,
-- but an ANALYZE rewrites the table's row in `pg_class` (its new row count), and that throws
-- away every prepared statement's plan that reads the table (docs, PREPARE, "Notes"), on
-- every connection of every instance and, through the WAL, of every replica: the group
-- commit's batch statement then costs its next batch on each connection ~5 ms of planning.
-- (A VACUUM that changes the row — the table's size, row count or all-visible pages — does
-- the same; HOT pruning keeps these tables' vacuums rare under sends: none of the three was
-- vacuumed during the measured round below.)
-- Measured 2026-12-03 in the fan-out benchmark (1000 conversations, 50 sends/s): the
-- conversations were analyzed every 5–15 s, each time followed by a run of slow sends.
--
-- Analyze them only once the table has changed by 100 000 rows more than the default would
-- wait for: a growing table is still analyzed as it grows (the scale factor is unchanged;
-- at 50 sends/s, 1000 conversations are analyzed about every half hour instead of every
-- 5–15 s), and between analyzes the planner scales its row estimates by the table's current
-- size in pages (docs §14.2), with the density VACUUM last recorded.
ALTER TABLE messaging.conversations SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.participants SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.user_counters SET (autovacuum_analyze_threshold = 100000);
-- The notification outbox is a queue that every send fills and the worker empties: its
-- statistics describe nothing that lasts, and the worker reads it through its primary key.
-- Analyzed automatically only after ~2 billion changes (the threshold's maximum).
ALTER TABLE messaging.notify_queue SET (autovacuum_analyze_threshold = 2147483647);
