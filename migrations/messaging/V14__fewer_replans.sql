-- Each ANALYZE of a table invalidates every cached plan that reads it, in every session
-- (the plan cache drops plans on a relation cache invalidation: PostgreSQL docs, PREPARE
-- notes and §20.7.4 plan_cache_mode); the next execution plans the statement again. The
-- group commit's batch statement reads all of the tables below and takes about 5 ms to plan
-- (pg_stat_statements, track_planning, in a send benchmark), during which its writer appends
-- nothing.
--
-- These tables are small and their rows are updated in place on every send (V5: the
-- conversation's counters, the sender's read marker and send budget) or written and deleted
-- soon after (the notification queue, V6, and the email digests, V8). Autovacuum counts each
-- such change towards ANALYZE (autovacuum_analyze_threshold + _scale_factor × rows, §25.1.6),
-- so with the default threshold of 50 it analyzed each of them at nearly every round
-- (autovacuum_naptime, 5 s here): 14–16 times each in a four-minute benchmark, for
-- statistics those updates do not change. Measured in the send benchmark: the batch
-- statement was planned again at 3.3 % of its executions before, 1.5 % after (what is left
-- comes from VACUUM, which updates the table's size in pg_class and invalidates as well).
-- Statistics still follow the rows added: 100 000 changes plus the default tenth of the
-- table's rows.
SET LOCAL lock_timeout = '5s';
ALTER TABLE messaging.conversations SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.participants SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.user_counters SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.notify_queue SET (autovacuum_analyze_threshold = 100000);
ALTER TABLE messaging.email_digests SET (autovacuum_analyze_threshold = 100000);
