//! Queue backlogs as metrics: how many rows wait in each database queue (an outbox, the
//! notification queue) and how long the oldest has waited, sampled on a timer into
//! `switchboard_queue_depth{queue}` and `switchboard_queue_oldest_age_seconds{queue}` (the
//! alert rules' backlog signals; ops/prometheus/alerts.yaml).

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::platform::db::{Conn, Route, Traced};

/// One queue: its metric label and a statement answering one row `(depth bigint,
/// oldest_age_seconds float8)` (0 when empty). The statement should read an index of the
/// waiting rows only, since it runs every [`EVERY`].
pub struct Queue {
    /// The `queue` label, e.g. `auth.mail_outbox`.
    pub name: &'static str,
    /// The sampling statement.
    pub sql: &'static str,
}

/// How often each queue is sampled.
pub const EVERY: Duration = Duration::from_secs(15);

/// Samples `queues` on `pool` (a primary) every [`EVERY`] until the service stops. A failed
/// sample keeps the last values (the database being down has its own alerts).
pub fn spawn(pool: Pool, queues: &'static [Queue], tasks: &crate::platform::tasks::Tasks) {
    tasks.spawn("queue backlog sampler", async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            for queue in queues {
                if let Err(e) = sample(&pool, queue).await {
                    tracing::debug!(queue = queue.name, error = %e, "backlog sample failed");
                }
            }
        }
    });
}

async fn sample(pool: &Pool, queue: &Queue) -> anyhow::Result<()> {
    let conn = Conn::get(pool, Route::BACKGROUND).await?;
    let row = conn.query_one_t(queue.sql, &[]).await?;
    crate::platform::metrics::record_queue(queue.name, row.get(0), row.get(1));
    Ok(())
}
