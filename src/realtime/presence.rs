//! Presence (DESIGN.md §4): a user is online while any of their sockets is open on any
//! instance. Each instance records its sockets in `messaging.presence_sockets` and beats in
//! `messaging.instances`; the durable state (`online`, `last_seen_at`) lives in
//! `messaging.presence`. Going online is announced at once; going offline only after a
//! grace period with no socket anywhere, so a reconnect (even to another instance) does not
//! flap. A sweeper on every instance turns users offline whose sockets were on an instance
//! that stopped beating (crashed).

use crate::platform::{
    db::{Conn, Route, Traced},
    tasks::Tasks,
};
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::{
    messaging::{
        events::BusEvent,
        protocol::{Event, PresenceChanged, ServerFrame},
    },
    platform::bus::Publisher,
};

/// An instance whose heartbeat is older than this is dead; its sockets no longer count.
const INSTANCE_TIMEOUT_SECS: f64 = 30.0;
const HEARTBEAT: Duration = Duration::from_secs(5);
const SWEEP: Duration = Duration::from_secs(10);

/// Presence bookkeeping of one instance.
pub struct Presence {
    instance: String,
    db: Pool,
    publisher: Publisher,
    grace: Duration,
    tasks: Tasks,
}

impl Presence {
    /// Starts the heartbeat and sweeper tasks of instance `instance`.
    pub fn spawn(
        instance: String,
        db: Pool,
        publisher: Publisher,
        grace: Duration,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            instance,
            db,
            publisher,
            grace,
            tasks: tasks.clone(),
        });
        let beat = this.clone();
        tasks.spawn("presence-heartbeat", async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                if let Err(e) = beat.heartbeat().await {
                    tracing::warn!(error = %e, "presence heartbeat failed");
                }
            }
        });
        let sweep = this.clone();
        tasks.spawn("presence-sweeper", async move {
            let mut tick = tokio::time::interval(SWEEP);
            loop {
                tick.tick().await;
                if let Err(e) = sweep.sweep(None).await {
                    tracing::warn!(error = %e, "presence sweep failed");
                }
            }
        });
        this
    }

    /// This instance's name (`INSTANCE_ID`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    async fn heartbeat(&self) -> anyhow::Result<()> {
        let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        conn.execute_t(
            "INSERT INTO messaging.instances (id, heartbeat_at) VALUES ($1, now())
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            &[&self.instance],
        )
        .await?;
        Ok(())
    }

    /// Records socket `conn_id` of `user_id`; announces `online` if the user was offline.
    pub async fn connected(&self, user_id: Uuid, conn_id: u64) {
        if let Err(e) = self.try_connected(user_id, conn_id).await {
            tracing::warn!(error = %e, "presence not recorded");
        }
    }

    async fn try_connected(&self, user_id: Uuid, conn_id: u64) -> anyhow::Result<()> {
        let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        conn.execute_t(
            "WITH beat AS (
                 INSERT INTO messaging.instances (id, heartbeat_at) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now())
             INSERT INTO messaging.presence_sockets (instance_id, conn_id, user_id)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&self.instance, &(conn_id as i64), &user_id],
        )
        .await?;
        let went_online = conn
            .query_opt_t(
                "INSERT INTO messaging.presence AS p (user_id, online, changed_at)
                 VALUES ($1, true, now())
                 ON CONFLICT (user_id) DO UPDATE SET online = true, changed_at = now()
                 WHERE NOT p.online
                 RETURNING last_seen_at",
                &[&user_id],
            )
            .await?;
        if let Some(row) = went_online {
            self.announce(user_id, true, row.get(0));
        }
        Ok(())
    }

    /// Forgets socket `conn_id`; after the grace period, if the user has no socket left on a
    /// live instance, marks them offline (`last_seen_at` = now) and announces it.
    pub fn disconnected(self: &Arc<Self>, user_id: Uuid, conn_id: u64) {
        let this = self.clone();
        self.tasks.spawn("presence-departure", async move {
            if let Err(e) = this.forget(conn_id).await {
                tracing::warn!(error = %e, "presence socket not removed");
            }
            tokio::time::sleep(this.grace).await;
            if let Err(e) = this.sweep(Some(user_id)).await {
                tracing::warn!(error = %e, "presence not updated");
            }
        });
    }

    async fn forget(&self, conn_id: u64) -> anyhow::Result<()> {
        let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        conn.execute_t(
            "DELETE FROM messaging.presence_sockets WHERE instance_id = $1 AND conn_id = $2",
            &[&self.instance, &(conn_id as i64)],
        )
        .await?;
        Ok(())
    }

    /// Marks offline (one user, or everyone) whoever is online with no socket on a live
    /// instance and has been in that state past the grace period; announces each.
    async fn sweep(&self, user: Option<Uuid>) -> anyhow::Result<()> {
        let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        let rows = conn
            .query_t(
                "UPDATE messaging.presence p
                 SET online = false, last_seen_at = now(), changed_at = now()
                 WHERE p.online AND ($1::uuid IS NULL OR p.user_id = $1)
                   AND p.changed_at <= now() - make_interval(secs => $2)
                   AND NOT EXISTS (
                       SELECT 1 FROM messaging.presence_sockets s
                       JOIN messaging.instances i ON i.id = s.instance_id
                       WHERE s.user_id = p.user_id
                         AND i.heartbeat_at > now() - make_interval(secs => $3))
                 RETURNING p.user_id, p.last_seen_at",
                &[&user, &self.grace.as_secs_f64(), &INSTANCE_TIMEOUT_SECS],
            )
            .await?;
        for r in &rows {
            self.announce(r.get(0), false, r.get(1));
        }
        if user.is_none() {
            conn.execute_t(
                "DELETE FROM messaging.presence_sockets s USING messaging.instances i
                 WHERE i.id = s.instance_id
                   AND i.heartbeat_at <= now() - make_interval(secs => $1)",
                &[&INSTANCE_TIMEOUT_SECS],
            )
            .await?;
        }
        Ok(())
    }

    /// On shutdown: forgets every socket of this instance and checks their users after the
    /// grace period elsewhere (the sweeper of any instance).
    pub async fn shutdown(&self) {
        let result = async {
            let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
            conn.execute_t(
                "DELETE FROM messaging.presence_sockets WHERE instance_id = $1",
                &[&self.instance],
            )
            .await?;
            conn.execute_t(
                "DELETE FROM messaging.instances WHERE id = $1",
                &[&self.instance],
            )
            .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "presence cleanup on shutdown failed");
        }
    }

    fn announce(&self, user_id: Uuid, online: bool, last_seen_at: Option<DateTime<Utc>>) {
        let frame = ServerFrame::new(Event::Presence(PresenceChanged {
            user_id,
            online,
            last_seen_at,
        }))
        .to_json();
        match serde_json::value::RawValue::from_string(frame) {
            Ok(frame) => self
                .publisher
                .publish(BusEvent::Presence { user_id, frame }),
            Err(e) => tracing::error!(error = %e, "presence frame is not JSON"),
        }
    }
}
