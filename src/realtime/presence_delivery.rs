//! Delivering presence changes without holding up the listener: the listener hands each
//! `presence` event to this task and goes on with the next notification. The task takes
//! every change that queued meanwhile, keeps only each user's latest (a flap of online →
//! offline → online is one frame), looks up who shares a conversation with any of them in
//! one query, and delivers. Presence is soft state — a client learns it again on every
//! `hello` — so when more changes queue than [`QUEUE`] the newest are dropped and logged.

use std::{collections::HashMap, sync::Arc};

use deadpool_postgres::Pool;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::hub::{Command, Frame, Hub};
use crate::platform::{
    db::{Conn, Route, Traced},
    tasks::Tasks,
};

/// Presence changes waiting at most.
const QUEUE: usize = 10_000;

/// Hands presence changes to the delivery task; cheap to clone.
#[derive(Clone)]
pub struct PresenceDelivery {
    tx: mpsc::Sender<(Uuid, Box<RawValue>)>,
}

impl PresenceDelivery {
    /// Starts the delivery task.
    pub fn spawn(primary: Pool, hub: Hub, tasks: &Tasks) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Uuid, Box<RawValue>)>(QUEUE);
        tasks.spawn("presence-delivery", async move {
            while let Some((user, frame)) = rx.recv().await {
                let mut latest = HashMap::from([(user, frame)]);
                while let Ok((user, frame)) = rx.try_recv() {
                    latest.insert(user, frame);
                }
                if let Err(e) = deliver(&primary, &hub, latest).await {
                    tracing::warn!(error = %e, "presence changes not delivered");
                }
            }
        });
        Self { tx }
    }

    /// Queues `user_id`'s presence `frame` without waiting.
    pub fn queue(&self, user_id: Uuid, frame: Box<RawValue>) {
        if self.tx.try_send((user_id, frame)).is_err() {
            tracing::warn!(user.id = %user_id, "presence queue full; change dropped");
        }
    }
}

/// Sends each user's latest change to everyone who shares a current conversation with them
/// (and to their own other sockets), with one query for all of them.
async fn deliver(
    primary: &Pool,
    hub: &Hub,
    latest: HashMap<Uuid, Box<RawValue>>,
) -> anyhow::Result<()> {
    let subjects: Vec<Uuid> = latest.keys().copied().collect();
    let conn = Conn::get(primary, Route::BACKGROUND).await?;
    let rows = conn
        .query_t(
            "SELECT p.user_id, array_agg(DISTINCT o.user_id) AS contacts
             FROM messaging.participants p
             JOIN messaging.participants o
               ON o.conversation_id = p.conversation_id AND o.left_at IS NULL
             WHERE p.user_id = ANY($1) AND p.left_at IS NULL
               -- Nobody they block sees their presence (issue 20).
               AND NOT EXISTS (SELECT 1 FROM messaging.blocks b
                               WHERE b.blocker_id = p.user_id AND b.blocked_id = o.user_id)
             GROUP BY p.user_id",
            &[&subjects],
        )
        .await?;
    drop(conn);
    let mut contacts: HashMap<Uuid, Vec<Uuid>> = rows
        .iter()
        .map(|r| (r.get::<_, Uuid>(0), r.get::<_, Vec<Uuid>>(1)))
        .collect();
    for (user, frame) in latest {
        let mut users = contacts.remove(&user).unwrap_or_default();
        if !users.contains(&user) {
            users.push(user);
        }
        hub.send(Command::Deliver {
            users,
            frame: Frame {
                text: Arc::from(frame.get()),
                at: None,
                committed_us: None,
            },
        });
    }
    Ok(())
}
