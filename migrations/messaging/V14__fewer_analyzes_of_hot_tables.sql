-- Issue 16: every send bumps a row of each of these tables — its conversation's counters
-- (last_seq, last_rev), the sender's read marker, the sender's send budget — and autovacuum
-- counts each bump as a modification towards the next ANALYZE (at 50 + 10 % of the table's
-- rows by default; PostgreSQL docs §25.1.6). The bumps change no statistic a plan depends on,
-- but each ANALYZE throws away every prepared statement's plan that reads the table
-- (docs, PREPARE, "Notes"), on every connection of every instance and replica: the group
-- commit's batch statement then costs its next batch on each connection ~5 ms of planning.
-- Measured 2026-12-03 in the fan-out benchmark (1000 conversations, 50 sends/s): the
-- conversations were analyzed every 5–15 s, each time followed by a run of slow sends.
--
-- Analyze them once the table has changed by 100 000 rows more than the default would wait
-- for: a table that grows is still analyzed as it grows (the scale factor is unchanged), and
-- between analyzes the planner scales its row estimates by the table's current size in pages
-- (docs §14.2), with the density VACUUM last recorded — these tables are vacuumed within
-- seconds (V5).
ALTER TABLE messaging.conversations SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.participants SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.user_counters SET (autovacuum_analyze_threshold = 100000);
-- The notification outbox is a queue that every send fills and the worker empties: its
-- statistics describe nothing that lasts, and the worker reads it through its primary key.
-- Never analyzed automatically (the threshold's maximum).
ALTER TABLE messaging.notify_queue SET (autovacuum_analyze_threshold = 2147483647);
