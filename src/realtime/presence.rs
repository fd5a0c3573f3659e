//! Presence (DESIGN.md §4): a user is online while any of their sockets is open on any
//! instance. Each instance records its sockets in `messaging.presence_sockets` and beats in
//! `messaging.instances`; the durable state (`online`, `last_seen_at`) lives in
//! `messaging.presence`. Going online is announced at once; going offline only after a
//! grace period with no socket anywhere, so a reconnect (even to another instance) does not
//! flap. A sweeper turns users offline whose sockets were on an instance that stopped
//! beating (crashed): every instance offers, and one a period sweeps, reading only the users
//! online.
//!
//! Socket arrivals and departures are written by one writer per instance, which takes
//! whatever queued while it last wrote and applies it in one transaction (the group commit's
//! pattern: a batch is what queued meanwhile, no timer): one connection however many sockets
//! come and go at once. Written one by one, 10 000 sockets closing together (a deploy, a
//! network blip) asked the pool for 10 000 connections; most waited past the pool's timeout,
//! their rows stayed — keeping their users online for as long as the instance lived — and the
//! requests of everyone else found no connection either. A batch that fails is kept and
//! written again (after [`crate::platform::db::reconnect_backoff`]'s pauses, 100 ms
//! doubling to 5 s), so a busy or briefly unreachable database delays presence but never
//! loses it. Users are upserted in id order,
//! so two instances' batches lock `messaging.presence` rows in the same order (no deadlock).

use crate::platform::{
    db::{Conn, Route, Traced},
    tasks::Tasks,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use backon::BackoffBuilder;
use tokio::sync::{mpsc, oneshot};

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
/// How often each instance offers to run the periodic sweep; also the length of the
/// wall-clock slots (the database's clock) of which the cluster sweeps in each at most once.
const SWEEP: Duration = Duration::from_secs(10);

/// Most socket changes the writer applies in one transaction (the rest wait for the next).
const BATCH_MAX: usize = 2048;

/// One change for the writer.
enum Change {
    /// A socket opened; `done` is answered once it is written, or once a try failed (a
    /// socket never waits for the database to come back).
    Arrived {
        user_id: Uuid,
        conn_id: u64,
        done: Option<oneshot::Sender<()>>,
    },
    /// A socket closed.
    Left { user_id: Uuid, conn_id: u64 },
    /// Answered once everything queued before it was tried (or a try failed).
    Flush(Option<oneshot::Sender<()>>),
}

/// Presence bookkeeping of one instance.
pub struct Presence {
    instance: String,
    db: Pool,
    publisher: Publisher,
    grace: Duration,
    /// To the writer. Unbounded, yet bounded by the sockets: each queues one arrival and
    /// one departure.
    changes: mpsc::UnboundedSender<Change>,
    /// To the departures' checker: users who lost a socket, and when their grace ends (at
    /// most one entry per written batch).
    departures: mpsc::UnboundedSender<(tokio::time::Instant, Vec<Uuid>)>,
}

/// Answers whoever waits on `change` (an arrival's socket, a flush).
fn answer(change: &mut Change) {
    if let Change::Arrived { done, .. } | Change::Flush(done) = change {
        if let Some(done) = done.take() {
            let _ = done.send(());
        }
    }
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
        let (changes, queued) = mpsc::unbounded_channel();
        let (departures, due) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            instance,
            db,
            publisher,
            grace,
            changes,
            departures,
        });
        let writer = this.clone();
        tasks.spawn("presence-writer", async move { writer.write(queued).await });
        let checker = this.clone();
        tasks.spawn("presence-departures", async move {
            checker.check_departures(due).await
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
                if let Err(e) = sweep.sweep_if_turn().await {
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

    /// Records socket `conn_id` of `user_id` and announces `online` if the user was
    /// offline; returns once written (or once the first try failed: the writer tries again
    /// on its own).
    pub async fn connected(&self, user_id: Uuid, conn_id: u64) {
        let (done, written) = oneshot::channel();
        let change = Change::Arrived {
            user_id,
            conn_id,
            done: Some(done),
        };
        if self.changes.send(change).is_ok() {
            let _ = written.await;
        }
    }

    /// Forgets socket `conn_id`; after the grace period, if the user has no socket left on a
    /// live instance, marks them offline (`last_seen_at` = now) and announces it.
    pub fn disconnected(&self, user_id: Uuid, conn_id: u64) {
        let _ = self.changes.send(Change::Left { user_id, conn_id });
    }

    /// The writer: applies what queued, batch by batch, until the service stops.
    async fn write(self: Arc<Self>, mut queued: mpsc::UnboundedReceiver<Change>) {
        let mut batch: Vec<Change> = Vec::new();
        let mut pauses = crate::platform::db::reconnect_backoff().build();
        loop {
            if batch.is_empty() {
                match queued.recv().await {
                    Some(c) => batch.push(c),
                    None => return,
                }
            }
            while batch.len() < BATCH_MAX {
                match queued.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let written = self.apply(&batch).await;
            // Whoever waits is answered either way: a socket does not wait for the database
            // to come back, and a flush (on stop) does not hang.
            batch.iter_mut().for_each(answer);
            batch.retain(|c| !matches!(c, Change::Flush(_)));
            match written {
                Ok(departed) => {
                    batch.clear();
                    pauses = crate::platform::db::reconnect_backoff().build();
                    if !departed.is_empty() {
                        let _ = self
                            .departures
                            .send((tokio::time::Instant::now() + self.grace, departed));
                    }
                }
                Err(e) => {
                    let pause = pauses.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %e, changes = batch.len(), retry_in_ms = pause.as_millis() as u64, "presence not written; trying again");
                    // Changes arriving meanwhile join the next try, and their waiters are
                    // answered at once.
                    let until = tokio::time::Instant::now() + pause;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(until) => break,
                            change = queued.recv() => match change {
                                Some(mut c) => {
                                    answer(&mut c);
                                    if !matches!(c, Change::Flush(_)) {
                                        batch.push(c);
                                    }
                                }
                                None => return,
                            },
                        }
                    }
                }
            }
        }
    }

    /// Writes `batch` in one transaction: the net change per socket (one that opened and
    /// closed within the batch writes nothing), then `online` for users who were offline
    /// (announced). Returns the users who lost a socket.
    async fn apply(&self, batch: &[Change]) -> anyhow::Result<Vec<Uuid>> {
        // Per socket, its last change wins: true = open.
        let mut sockets: BTreeMap<u64, (Uuid, bool)> = BTreeMap::new();
        for change in batch {
            match change {
                Change::Arrived {
                    user_id, conn_id, ..
                } => {
                    sockets.insert(*conn_id, (*user_id, true));
                }
                Change::Left { user_id, conn_id } => {
                    sockets.insert(*conn_id, (*user_id, false));
                }
                Change::Flush(_) => {}
            }
        }
        if sockets.is_empty() {
            return Ok(Vec::new());
        }
        let (mut open_ids, mut open_users, mut closed_ids) = (Vec::new(), Vec::new(), Vec::new());
        let (mut arrived, mut departed) = (BTreeSet::new(), BTreeSet::new());
        for (conn_id, (user_id, open)) in &sockets {
            if *open {
                open_ids.push(*conn_id as i64);
                open_users.push(*user_id);
                arrived.insert(*user_id);
            } else {
                closed_ids.push(*conn_id as i64);
                departed.insert(*user_id);
            }
        }
        let mut conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        let tx = conn.transaction().await?;
        if !open_ids.is_empty() {
            tx.execute_t(
                "WITH beat AS (
                     INSERT INTO messaging.instances (id, heartbeat_at) VALUES ($1, now())
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = now())
                 INSERT INTO messaging.presence_sockets (instance_id, conn_id, user_id)
                 SELECT $1, s.conn_id, s.user_id
                 FROM unnest($2::bigint[], $3::uuid[]) AS s(conn_id, user_id)
                 ON CONFLICT DO NOTHING",
                &[&self.instance, &open_ids, &open_users],
            )
            .await?;
        }
        if !closed_ids.is_empty() {
            tx.execute_t(
                "DELETE FROM messaging.presence_sockets
                 WHERE instance_id = $1 AND conn_id = ANY($2::bigint[])",
                &[&self.instance, &closed_ids],
            )
            .await?;
        }
        let arrived: Vec<Uuid> = arrived.into_iter().collect();
        let went_online = if arrived.is_empty() {
            Vec::new()
        } else {
            // In id order: every instance locks these rows in the same order.
            tx.query_t(
                "INSERT INTO messaging.presence AS p (user_id, online, changed_at)
                 SELECT u, true, now() FROM unnest($1::uuid[]) AS u ORDER BY u
                 ON CONFLICT (user_id) DO UPDATE SET online = true, changed_at = now()
                 WHERE NOT p.online
                 RETURNING p.user_id, p.last_seen_at",
                &[&arrived],
            )
            .await?
        };
        tx.commit().await?;
        for row in &went_online {
            self.announce(row.get(0), true, row.get(1));
        }
        Ok(departed.into_iter().collect())
    }

    /// The departures' checker: when a batch's grace ends, marks offline those of its users
    /// left without a socket on a live instance (the periodic sweep would, within one or two
    /// [`SWEEP`] periods; this is on time). Every batch whose grace has ended by then joins the same check (the grace
    /// is the same for all, so they queue in deadline order): one statement however many
    /// batches a storm of departures was written in.
    async fn check_departures(
        self: Arc<Self>,
        mut due: mpsc::UnboundedReceiver<(tokio::time::Instant, Vec<Uuid>)>,
    ) {
        let mut next = None;
        loop {
            let (at, mut users) = match next.take() {
                Some(n) => n,
                None => match due.recv().await {
                    Some(n) => n,
                    None => return,
                },
            };
            tokio::time::sleep_until(at).await;
            while let Ok((at, more)) = due.try_recv() {
                if at <= tokio::time::Instant::now() {
                    users.extend(more);
                } else {
                    next = Some((at, more));
                    break;
                }
            }
            users.sort_unstable();
            users.dedup();
            if let Err(e) = self.sweep(&users).await {
                tracing::warn!(error = %e, users = users.len(), "presence not updated; the sweeper will");
            }
        }
    }

    /// Returns once every change queued before it was tried (written, or its first try
    /// failed), or at once when the writer has stopped.
    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.changes.send(Change::Flush(Some(done))).is_ok() {
            let _ = flushed.await;
        }
    }

    /// The periodic sweep, if it is this instance's turn: the first instance to offer in a
    /// slot of [`SWEEP`] on the database's clock takes the slot's turn (in
    /// `messaging.presence_sweeps`, migration V16) and sweeps; the others skip it. So the
    /// cluster sweeps once a period whatever its size, and a dead instance's turns go to
    /// the next live one. The turn, the sweep and the dead sockets' removal are one
    /// transaction: a sweep that fails gives the turn back, for any instance to take in the
    /// same slot. Two instances offering at once queue on the one row; the second then sees
    /// the slot taken. Every instance ticks once a period, so a slot goes unswept only when
    /// one instance's ticks drift across a slot's edge: at most two periods between sweeps.
    async fn sweep_if_turn(&self) -> anyhow::Result<()> {
        let mut conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        let tx = conn.transaction().await?;
        let turn = tx
            .query_opt_t(
                "INSERT INTO messaging.presence_sweeps AS w (slot, swept_by)
                 VALUES (floor(extract(epoch FROM now())::float8 / $2::float8)::bigint, $1)
                 ON CONFLICT (id) DO UPDATE SET slot = excluded.slot, swept_by = $1
                 WHERE w.slot < excluded.slot
                 RETURNING 1",
                &[&self.instance, &SWEEP.as_secs_f64()],
            )
            .await?;
        if turn.is_none() {
            tx.commit().await?;
            return Ok(());
        }
        let rows = tx
            .query_t(
                &sweep_sql("TRUE"),
                &[&self.grace.as_secs_f64(), &INSTANCE_TIMEOUT_SECS],
            )
            .await?;
        tx.execute_t(
            "DELETE FROM messaging.presence_sockets s USING messaging.instances i
             WHERE i.id = s.instance_id
               AND i.heartbeat_at <= now() - make_interval(secs => $1)",
            &[&INSTANCE_TIMEOUT_SECS],
        )
        .await?;
        tx.commit().await?;
        for r in &rows {
            self.announce(r.get(0), false, r.get(1));
        }
        Ok(())
    }

    /// Marks offline those of `users` who are online with no socket on a live instance and
    /// have been in that state past the grace period; announces each.
    async fn sweep(&self, users: &[Uuid]) -> anyhow::Result<()> {
        let conn = Conn::get(&self.db, Route::BACKGROUND).await?;
        let rows = conn
            .query_t(
                &sweep_sql("p.user_id = ANY($3)"),
                &[&self.grace.as_secs_f64(), &INSTANCE_TIMEOUT_SECS, &users],
            )
            .await?;
        for r in &rows {
            self.announce(r.get(0), false, r.get(1));
        }
        Ok(())
    }

    /// On shutdown: lets the writer finish what queued (so no socket row is written after
    /// the instance's are deleted), then forgets every socket of this instance; their users
    /// are checked after the grace period elsewhere (the sweeper of any instance).
    pub async fn shutdown(&self) {
        self.flush().await;
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

/// The sweep's statement for the users `which` selects (SQL over `p`, `messaging.presence`):
/// marks offline whoever is online with no socket on an instance that beat within
/// `$2` seconds and has been in that state more than `$1` seconds (the grace period);
/// returns `(user_id, last_seen_at)` of each. Two statements, not one with an optional
/// user list: a generic plan of `$3 IS NULL OR p.user_id = ANY($3)` could not use the
/// primary key, and a departure check would read every online user.
fn sweep_sql(which: &str) -> String {
    format!(
        "UPDATE messaging.presence p
         SET online = false, last_seen_at = now(), changed_at = now()
         WHERE p.online AND {which}
           AND p.changed_at <= now() - make_interval(secs => $1)
           AND NOT EXISTS (
               SELECT 1 FROM messaging.presence_sockets s
               JOIN messaging.instances i ON i.id = s.instance_id
               WHERE s.user_id = p.user_id
                 AND i.heartbeat_at > now() - make_interval(secs => $2))
         RETURNING p.user_id, p.last_seen_at"
    )
}
