//! The LISTEN side of the bus: one dedicated primary connection per messaging instance (LISTEN
//! is refused on a hot standby), reconnecting by itself, feeding the local [`Hub`].

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::{
    bus::{BusEvent, CHANNEL},
    hub::{Command, Hub},
};
use crate::messaging::model::{load_message, ServerFrame};

/// Starts the listener task. `primary` is used to resolve a conversation's participants and
/// to load messages sent by reference.
pub fn spawn(primary_url: String, primary: Pool, hub: Hub) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match listen(&primary_url, &primary, &hub).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::time::sleep(backoff).await;
        }
    });
}

async fn listen(url: &str, primary: &Pool, hub: &Hub) -> anyhow::Result<()> {
    let cfg = crate::db::config(url, "switchboard-listener")?;
    let (client, mut connection) = cfg.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection error");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::info!(channel = CHANNEL, "listening for events");
    while let Some(payload) = rx.recv().await {
        let events: Vec<BusEvent> = match serde_json::from_str(&payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable event payload");
                continue;
            }
        };
        for event in events {
            if let Err(e) = dispatch(event, primary, hub).await {
                tracing::warn!(error = %e, "event not delivered; clients will see a seq gap");
            }
        }
    }
    driver.abort();
    anyhow::bail!("LISTEN connection closed")
}

async fn dispatch(event: BusEvent, primary: &Pool, hub: &Hub) -> anyhow::Result<()> {
    match event {
        BusEvent::SessionRevoked { session_id, reason } => {
            tracing::info!(session.id = %session_id, reason, "closing sockets of ended session");
            hub.send(Command::CloseSession { session_id });
        }
        BusEvent::Conversation {
            conversation_id,
            exclude_user,
            frame,
        } => {
            let span = tracing::info_span!("realtime.fan_out", conversation.id = %conversation_id);
            let _g = span.enter();
            let users = participants(primary, conversation_id, exclude_user).await?;
            hub.send(Command::Deliver {
                users,
                frame: Arc::from(frame.get()),
            });
        }
        BusEvent::Users { user_ids, frame } => {
            hub.send(Command::Deliver {
                users: user_ids,
                frame: Arc::from(frame.get()),
            });
        }
        BusEvent::MessageRef {
            conversation_id,
            message_id,
            event,
        } => {
            let conn = primary.get().await?;
            let Some(message) = load_message(&conn, message_id).await? else {
                return Ok(());
            };
            let frame = ServerFrame {
                kind: &event,
                conversation_id: Some(conversation_id),
                seq: Some(message.seq),
                data: &message,
            }
            .to_json();
            let users = participants(primary, conversation_id, None).await?;
            hub.send(Command::Deliver {
                users,
                frame: Arc::from(frame),
            });
        }
    }
    Ok(())
}

/// Current participants of a conversation, read on the primary so that a removal takes
/// effect for the very next event.
async fn participants(
    primary: &Pool,
    conversation_id: Uuid,
    exclude: Option<Uuid>,
) -> anyhow::Result<Vec<Uuid>> {
    let conn = primary.get().await?;
    let stmt = conn
        .prepare_cached(
            "SELECT user_id FROM messaging.participants
             WHERE conversation_id = $1 AND left_at IS NULL",
        )
        .await?;
    Ok(conn
        .query(&stmt, &[&conversation_id])
        .await?
        .iter()
        .map(|r| r.get::<_, Uuid>(0))
        .filter(|u| Some(*u) != exclude)
        .collect())
}
