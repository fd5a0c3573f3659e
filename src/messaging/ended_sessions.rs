//! Sessions that ended recently, remembered by every messaging instance (issue 14): the
//! access tokens of an ended session stay cryptographically valid until they expire, so
//! each instance refuses them itself. Filled from the bus (`SessionRevoked`, the NOTIFY the
//! auth service sends when a session ends) and, at start and after every LISTEN reconnect,
//! from `auth.sessions_ended_since` (a SECURITY DEFINER function: the messaging role never
//! reads auth's tables), so a notification missed while disconnected leaves no hole.
//!
//! An entry is kept `SESSION_END_MEMORY_SECS` (at least the access token lifetime plus the
//! verification leeway): after that every token of the session has expired anyway.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

/// The set of recently ended sessions; one per instance, shared by its handlers and sockets.
pub struct EndedSessions {
    memory: Duration,
    ended: Mutex<HashMap<Uuid, Instant>>,
    /// Set once the ends of the last `memory` have been loaded from the primary: until then
    /// the instance does not report ready (see `GET /api/readyz`).
    loaded: AtomicBool,
}

impl EndedSessions {
    /// An empty set remembering each session for `memory`.
    pub fn new(memory: Duration) -> Self {
        Self {
            memory,
            ended: Mutex::new(HashMap::new()),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether a token issued at `iat` and expiring at `exp` (Unix seconds) dies — with the
    /// 30 s verification leeway — before its session's end would be forgotten. A longer-lived
    /// token could outlive the memory, so it is refused.
    pub fn covers(&self, iat: i64, exp: i64) -> bool {
        exp.saturating_sub(iat).saturating_add(30) <= self.memory.as_secs() as i64
    }

    /// Remembers that `session_id` ended `ago` before now; entries past the memory are
    /// dropped on the way, so the set holds only the last `memory`'s ends.
    pub fn insert(&self, session_id: Uuid, ago: Duration) {
        let now = Instant::now();
        let at = now.checked_sub(ago).unwrap_or(now);
        if let Ok(mut map) = self.ended.lock() {
            map.retain(|_, t| now.duration_since(*t) < self.memory);
            if now.duration_since(at) < self.memory {
                map.insert(session_id, at);
            }
        }
    }

    /// Whether the recent ends have been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Whether `session_id` ended within the memory.
    pub fn contains(&self, session_id: Uuid) -> bool {
        self.ended.lock().is_ok_and(|map| {
            map.get(&session_id)
                .is_some_and(|t| t.elapsed() < self.memory)
        })
    }

    /// Loads the sessions that ended within the memory from the primary; returns them so the
    /// caller can close their sockets too.
    ///
    /// Errors: the query fails.
    pub async fn load(&self, conn: &tokio_postgres::Client) -> anyhow::Result<Vec<Uuid>> {
        let rows = conn
            .query(
                "SELECT session_id, extract(epoch FROM now() - ended_at)::float8
                 FROM auth.sessions_ended_since(now() - make_interval(secs => $1))",
                &[&self.memory.as_secs_f64()],
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = r.get(0);
            let ago: f64 = r.get(1);
            self.insert(id, Duration::from_secs_f64(ago.max(0.0)));
            ids.push(id);
        }
        self.loaded.store(true, Ordering::Relaxed);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_remembered_for_the_memory_only() {
        let set = EndedSessions::new(Duration::from_secs(60));
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        set.insert(a, Duration::ZERO);
        set.insert(b, Duration::from_secs(120));
        assert!(set.contains(a));
        assert!(!set.contains(b), "ended before the memory");
        assert!(!set.contains(c));
        assert!(set.covers(0, 30));
        assert!(!set.covers(0, 31), "outlives the memory with the leeway");
    }
}
