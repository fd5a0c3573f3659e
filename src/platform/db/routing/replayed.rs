//! The replay position each replica connection last reported, so a read whose consistency
//! token that connection has already replayed skips the `pg_last_wal_replay_lsn()` round
//! trip.
//!
//! Why per connection, not per replica: a replica URL can lead to several servers (a
//! Kubernetes `-ro` Service balances over every standby), and a standby that restarts may
//! come back behind what it had replayed (it resumes from its last restartpoint, PostgreSQL
//! docs §30.5, "WAL Configuration"). One connection, however, talks to one backend of one
//! running server for its whole life, and that server's replay position only moves forward
//! while it runs (§27.2.2, "Standby Server Operation") — so a position seen on a connection
//! stays a lower bound for as long as that connection lives.
//!
//! A connection is known by its statement cache's `Arc` (deadpool-postgres gives each client
//! its own, for the client's whole life). Each entry keeps a `Weak` to it: while the entry
//! exists the allocation cannot be reused, so a new connection can never inherit an old
//! one's position; entries of closed connections are dropped as the table is written.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use deadpool_postgres::StatementCache;

use super::super::Lsn;

/// Per-connection replay positions of one replica pool (bounded by the pool's connections:
/// entries of closed connections are pruned on insert). `C` is what identifies a connection:
/// its statement cache.
pub struct ReplayedByConnection<C = StatementCache> {
    seen: Mutex<HashMap<usize, (Weak<C>, Lsn)>>,
}

impl<C> Default for ReplayedByConnection<C> {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> ReplayedByConnection<C> {
    /// Whether `conn` (a connection's statement cache, `&object.statement_cache`) is known to
    /// have replayed `token` already.
    pub fn covers(&self, conn: &Arc<C>, token: Lsn) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        seen.get(&key(conn))
            .is_some_and(|(weak, lsn)| weak.as_ptr() == Arc::as_ptr(conn) && *lsn >= token)
    }

    /// Records that `conn` reported replay position `lsn` (kept only if it moves forward).
    pub fn saw(&self, conn: &Arc<C>, lsn: Lsn) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        match seen.get_mut(&key(conn)) {
            Some((weak, known)) if weak.as_ptr() == Arc::as_ptr(conn) => {
                if lsn > *known {
                    *known = lsn;
                }
            }
            _ => {
                seen.retain(|_, (weak, _)| weak.strong_count() > 0);
                seen.insert(key(conn), (Arc::downgrade(conn), lsn));
            }
        }
    }

    /// How many connections have an entry (closed ones included until the next insert).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

fn key<C>(conn: &Arc<C>) -> usize {
    Arc::as_ptr(conn) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Arc<u8> {
        Arc::new(0)
    }

    #[test]
    fn a_connection_covers_what_it_replayed_only() {
        let t = ReplayedByConnection::<u8>::default();
        let (a, b) = (cache(), cache());
        assert!(!t.covers(&a, Lsn::from(100)), "nothing seen yet");
        t.saw(&a, Lsn::from(100));
        assert!(t.covers(&a, Lsn::from(100)));
        assert!(t.covers(&a, Lsn::from(99)));
        assert!(!t.covers(&a, Lsn::from(101)), "ahead of what it reported");
        assert!(
            !t.covers(&b, Lsn::from(1)),
            "another connection's position is not its own"
        );
        t.saw(&a, Lsn::from(50));
        assert!(
            t.covers(&a, Lsn::from(100)),
            "a lower report never moves it back"
        );
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let t = ReplayedByConnection::<u8>::default();
        let a = cache();
        t.saw(&a, Lsn::from(100));
        drop(a);
        let b = cache();
        t.saw(&b, Lsn::from(1));
        assert_eq!(t.len(), 1, "the closed connection's entry is pruned");
        assert!(!t.covers(&b, Lsn::from(100)));
    }
}
