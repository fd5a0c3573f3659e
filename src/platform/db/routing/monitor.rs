//! The replica health monitor: every `REPLICA_CHECK_INTERVAL_MS` it samples the primary's
//! WAL position and checks each replica — reachable, in recovery, lag in bytes (the
//! primary's `pg_current_wal_lsn()` minus the replica's `pg_last_wal_replay_lsn()`) and in
//! seconds (how long ago the primary wrote the oldest WAL the replica has not replayed) —
//! marking it healthy or not for [`super::Routing`]'s reads. It checks through each server's
//! own monitor connection ([`super::ServerPools::monitor`]), never the requests' pool: a pool
//! a storm has exhausted is not a server that is down.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio_postgres::types::PgLsn;

use super::{Health, Lsn, Replica, Routing};

impl Routing {
    /// Starts the health monitor: every `check_interval`, each replica is checked with a
    /// short statement timeout and marked healthy or not.
    pub fn spawn_monitor(self: &Arc<Self>, tasks: &crate::platform::tasks::Tasks) {
        let this = self.clone();
        tasks.spawn("replica-monitor", async move {
            let mut tick = tokio::time::interval(this.policy.check_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.check().await;
            }
        });
    }

    async fn check(&self) {
        let timeout = self.policy.check_interval.min(Duration::from_millis(800));
        let primary_lsn = tokio::time::timeout(timeout, async {
            let conn = self.primary_monitor.get().await.ok()?;
            let row = conn
                .query_one(
                    "SELECT pg_current_wal_lsn(), pg_notification_queue_usage()",
                    &[],
                )
                .await
                .ok()?;
            crate::platform::metrics::set_notify_queue_usage(row.get(1));
            Some(row.get::<_, PgLsn>(0))
        })
        .await
        .ok()
        .flatten();
        if let (Some(lsn), Ok(mut samples)) = (primary_lsn, self.samples.lock()) {
            samples.push_back((lsn, Instant::now()));
            while samples.len() > 1200 {
                samples.pop_front();
            }
        }
        let was_up = self
            .primary_up
            .swap(primary_lsn.is_some(), Ordering::Relaxed);
        if was_up != primary_lsn.is_some() {
            tracing::warn!(up = primary_lsn.is_some(), "primary reachability changed");
        }
        for replica in &self.replicas {
            let mut health = tokio::time::timeout(timeout, probe(replica, primary_lsn))
                .await
                .unwrap_or_default();
            health.lag_seconds = health.replay.map(|r| self.lag_seconds(r));
            let healthy = health.reachable
                && health.in_recovery
                && health
                    .lag_bytes
                    .is_none_or(|b| b <= self.policy.max_lag_bytes)
                && health
                    .lag_seconds
                    .is_none_or(|s| s <= self.policy.max_lag.as_secs_f64());
            let before = replica.health();
            let health = Health { healthy, ..health };
            if before.healthy != healthy {
                tracing::warn!(replica = %replica.name, ?health, "replica health changed");
            }
            replica.set(health);
            crate::platform::metrics::record_replica(
                &replica.name,
                healthy,
                health.lag_bytes.unwrap_or(0) as f64,
                health.lag_seconds.unwrap_or(0.0),
            );
        }
    }

    /// Seconds since the primary wrote the oldest WAL a replica at `replay` lacks: 0 when it
    /// has everything sampled; otherwise the age of the first sample past `replay`.
    fn lag_seconds(&self, replay: Lsn) -> f64 {
        let Ok(samples) = self.samples.lock() else {
            return 0.0;
        };
        samples
            .iter()
            .find(|(lsn, _)| *lsn > replay)
            .map(|(_, at)| at.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// Health of one replica (unreachable if anything fails); `lag_seconds` is filled in by the
/// caller from the primary's sampled positions.
async fn probe(replica: &Replica, primary_lsn: Option<Lsn>) -> Health {
    let Ok(conn) = replica.monitor.get().await else {
        return Health::default();
    };
    let row = conn
        .query_one("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()", &[])
        .await;
    let Ok(row) = row else {
        return Health::default();
    };
    let in_recovery: bool = row.get(0);
    let replay: Option<Lsn> = row.get(1);
    let lag_bytes = match (primary_lsn, replay) {
        (Some(p), Some(r)) => Some(u64::from(p).saturating_sub(u64::from(r))),
        _ => None,
    };
    Health {
        reachable: true,
        in_recovery,
        lag_bytes,
        lag_seconds: None,
        replay,
        healthy: false,
    }
}
