-- Undoes V14's analyze thresholds on conversations, participants and user_counters: they
-- starved the planner of the tables' growth, and that cost far more than the re-plans V14
-- saved.
--
-- V14 assumed that between analyzes the planner's row estimate follows a table's growth (it
-- scales the row count VACUUM last recorded by the table's current size in pages; PostgreSQL
-- docs §14.2). It does not when the table grows into its own free space: every send bumps
-- its conversation's row, so VACUUM records a table of few rows on many pages, and rows
-- added later fill those pages without adding any. Measured 2026-12-03 in the full
-- benchmark: 1032 conversations that the planner took for 35; the group commit's lock
-- statement's generic plan scanned every conversation once per row of the others (a nested
-- loop, 31 ms a batch), and the fan-out at 50 sends/s went from p99 16.7 ms to 38.2 ms.
-- With its modifications counted as usual, a table this size is analyzed within seconds of
-- growing. (The lock statement no longer joins conversations in a way that a wrong estimate
-- can turn into a loop over them either: see `LOCK_CONVERSATIONS`.)
--
-- notify_queue keeps V14's threshold: the queue is read only through its primary key, and
-- VACUUM, which runs on it every few seconds, keeps its row count current.
ALTER TABLE messaging.conversations RESET (autovacuum_analyze_threshold);
ALTER TABLE messaging.participants RESET (autovacuum_analyze_threshold);
ALTER TABLE messaging.user_counters RESET (autovacuum_analyze_threshold);
