-- The presence sweeper (src/realtime/presence.rs) looks for users marked online who have no
-- socket on a live instance. It read every presence row ever written, online or not — a
-- sequential scan of all users every 10 s, on every instance — and every instance ran it.
--
-- Online users only: the sweep's `WHERE p.online` can use this partial index (PostgreSQL
-- docs §11.8, "Partial Indexes"), so its cost follows the users online, not the users who
-- ever were. (Measured 2026-12-03 in the full benchmark at 10 000 online users: 15 ms of
-- the primary per sweep, 47 ms under the fan-out's load, on each of two instances.)
CREATE INDEX presence_online_idx ON messaging.presence (user_id) WHERE online;

-- Whose turn it is: the one row says when the cluster last swept. An instance sweeps only if
-- no instance did within the sweep period, so the cluster sweeps about once a period however
-- many instances it has. UNLOGGED like `instances`: after a crash of the primary it is
-- empty, and the next tick of any instance sweeps.
CREATE UNLOGGED TABLE messaging.presence_sweeps (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    swept_at  timestamptz NOT NULL,
    swept_by  text NOT NULL
);
