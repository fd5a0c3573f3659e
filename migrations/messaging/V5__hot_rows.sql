-- Issue 16: the rows every send updates — its conversation's counters (last_seq, last_rev),
-- the sender's read marker, the sender's send budget — are updated many times a second in a
-- busy conversation. Measured under load, dead versions of them piled up faster than pages
-- were pruned (a page every batch has pinned is not pruned), a share of the updates stopped
-- being HOT and the primary key index grew with entries to dead rows, and the CPU per send
-- grew with the length of the run. Room on each page keeps the updates heap-only (PostgreSQL
-- docs §65.7 "Heap-Only Tuples (HOT)"), and these tables are vacuumed as soon as a few
-- hundred dead versions exist instead of a fifth of the table (§25.1.6, per-table storage
-- parameters autovacuum_vacuum_threshold / _scale_factor).
ALTER TABLE messaging.conversations SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE messaging.participants SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE messaging.user_counters SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0
);
