-- The presence sweeper (src/realtime/presence.rs) looks for users marked online who have no
-- socket on a live instance. It read every presence row ever written, online or not — a
-- sequential scan of all users every 10 s, on every instance — and every instance ran it.
--
-- Online users only: the sweep's `WHERE p.online` can use this partial index (PostgreSQL
-- docs §11.8, "Partial Indexes"), so its cost follows the users online, not the users who
-- ever were. (Measured 2026-12-03 in the full benchmark at 10 000 online users: 15 ms of
-- the primary per sweep, 47 ms under the fan-out's load, on each of two instances.)
-- The price: `online` is now an indexed column, so the update that flips it (a user's first
-- socket, their departure) is no longer a HOT update and writes an entry in each index of
-- the table (PostgreSQL docs, "Heap-Only Tuples (HOT)"). Those flips happen per connect and disconnect,
-- not per message; the sweep ran every 10 s on every instance.
CREATE INDEX presence_online_idx ON messaging.presence (user_id) WHERE online;

-- Whose turn it is: the one row holds the last slot of the sweep period (10 s of the
-- database's clock, counted from the epoch) in which an instance swept. An instance sweeps
-- only in a slot no instance has swept in, so the cluster sweeps once a period however many
-- instances it has. UNLOGGED like `instances`: after a crash of the primary it is empty,
-- and the next tick of any instance sweeps.
CREATE UNLOGGED TABLE messaging.presence_sweeps (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    slot      bigint NOT NULL,
    swept_by  text NOT NULL
);
