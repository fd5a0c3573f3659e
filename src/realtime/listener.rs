//! The LISTEN side of the bus: one dedicated primary connection per messaging instance (LISTEN
//! is refused on a hot standby), reconnecting by itself, feeding the local [`Hub`]. After a
//! reconnect, notifications sent while it was down are lost, so every local socket is told
//! to catch up from the database ([`Command::Resync`]).

use std::{sync::Arc, time::Duration};

use backon::Retryable;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::{
    hub::{Command, Frame, Hub},
    presence_delivery::PresenceDelivery,
};
use crate::platform::{
    db::{Conn, Route},
    tasks::Tasks,
};
use crate::{
    auth::session::SessionEnded,
    messaging::{
        ended_sessions::EndedSessions, events::BusEvent, model::load_message,
        publish::message_frame,
    },
    platform::bus::CHANNEL,
};

/// Starts the listener task (and its presence delivery task). `primary` is used to resolve
/// who receives an event and to load messages sent by reference; `ended` learns of every
/// session that ends. A lost connection
/// is re-established with exponential back-off ([`crate::platform::db::reconnect_backoff`]), which
/// starts over after every connection that was made.
pub fn spawn(
    primary_url: SecretString,
    application_name: String,
    primary: Pool,
    hub: Hub,
    ended: Arc<EndedSessions>,
    tasks: &Tasks,
) {
    let presence = PresenceDelivery::spawn(primary.clone(), hub.clone(), tasks);
    tasks.spawn("listener", async move {
        let mut connected_before = false;
        loop {
            let listening = (|| listen(&primary_url, &application_name, &hub, &ended))
                .retry(crate::platform::db::reconnect_backoff())
                .notify(|e, after| {
                    tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "LISTEN connection failed");
                })
                .await;
            let Ok(listening) = listening else { continue };
            if connected_before {
                hub.send(Command::Resync);
            }
            connected_before = true;
            listening.serve(&primary, &hub, &ended, &presence).await;
            tracing::warn!("LISTEN connection lost; reconnecting");
        }
    });
}

/// A LISTEN connection, established: its notifications arrive on `rx`.
struct Listening {
    _client: tokio_postgres::Client,
    rx: mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<()>,
}

/// Connects, LISTENs, and loads the sessions that ended while no notification could reach
/// this instance (refusing their tokens, closing any socket of theirs still open here).
async fn listen(
    url: &SecretString,
    application_name: &str,
    hub: &Hub,
    ended: &EndedSessions,
) -> anyhow::Result<Listening> {
    let (cfg, tls) = crate::platform::db::config(url, application_name)?;
    let (client, mut connection) = cfg.connect(tls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
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
    let ready = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        ended.load(&client).await
    };
    match ready.await {
        Ok(sessions) => {
            tracing::info!(channel = CHANNEL, "listening for events");
            for session_id in sessions {
                hub.send(Command::CloseSession { session_id });
            }
            Ok(Listening {
                _client: client,
                rx,
                driver,
            })
        }
        Err(e) => {
            driver.abort();
            Err(e)
        }
    }
}

impl Listening {
    /// Dispatches notifications until the connection ends.
    async fn serve(
        mut self,
        primary: &Pool,
        hub: &Hub,
        ended: &EndedSessions,
        presence: &PresenceDelivery,
    ) {
        while let Some(payload) = self.rx.recv().await {
            let events: Vec<BusEvent> = match serde_json::from_str(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable event payload");
                    continue;
                }
            };
            for event in events {
                if let Err(e) = dispatch(event, primary, hub, ended, presence).await {
                    tracing::warn!(error = %e, "event not delivered; sockets will catch up");
                }
            }
        }
        self.driver.abort();
    }
}

async fn dispatch(
    event: BusEvent,
    primary: &Pool,
    hub: &Hub,
    ended: &EndedSessions,
    presence: &PresenceDelivery,
) -> anyhow::Result<()> {
    match event {
        BusEvent::SessionRevoked(SessionEnded { session_id, reason }) => {
            tracing::info!(session.id = %session_id, reason, "closing sockets of ended session");
            ended.insert(session_id, Duration::ZERO);
            hub.send(Command::CloseSession { session_id });
            // Its push subscriptions end with it (every instance hears this; the delete is
            // idempotent). One missed here is dropped by the push sender, which checks the
            // session before each push.
            match primary.get().await {
                Ok(conn) => {
                    if let Err(e) = conn
                        .execute(
                            "DELETE FROM messaging.push_subscriptions WHERE session_id = $1",
                            &[&session_id],
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "push subscriptions of an ended session not deleted");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push subscriptions of an ended session not deleted")
                }
            }
        }
        BusEvent::MembershipEnded {
            conversation_id,
            user_ids,
        } => hub.send(Command::MembershipEnded {
            conversation_id,
            users: user_ids,
        }),
        BusEvent::Conversation {
            conversation_id,
            exclude,
            message_seq,
            joined_after,
            rev,
            recipients: carried,
            trace,
            at_us,
            frame,
        } => {
            use tracing::Instrument;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            // A new trace per fan-out, linked to the request that made the change (sampled
            // whenever that request was: telemetry::FollowLinks). Named and attributed by
            // the messaging semantic conventions (still "development" upstream): a consumer's
            // `process` of a message from the NOTIFY channel.
            let span = tracing::info_span!(
                parent: None,
                "realtime.fan_out",
                otel.name = %format!("process {CHANNEL}"),
                otel.kind = "consumer",
                messaging.system = "postgresql",
                messaging.operation.type = "process",
                messaging.operation.name = "fan_out",
                messaging.destination.name = CHANNEL,
                switchboard.conversation.id = %conversation_id,
                switchboard.fanout.recipients = tracing::field::Empty,
            );
            if let Some(sc) = trace
                .as_deref()
                .and_then(crate::platform::bus::span_context_of)
            {
                span.add_link(sc);
            }
            let users = match carried {
                Some(users) => users.into_iter().filter(|u| !exclude.contains(u)).collect(),
                None => {
                    recipients(
                        primary,
                        conversation_id,
                        message_seq,
                        joined_after,
                        &exclude,
                    )
                    .instrument(span.clone())
                    .await?
                }
            };
            span.record("switchboard.fanout.recipients", users.len());
            hub.send(Command::Deliver {
                users,
                frame: Frame {
                    text: Arc::from(frame.get()),
                    at: rev.map(|r| (conversation_id, r)),
                    committed_us: at_us,
                },
            });
        }
        BusEvent::Users { user_ids, frame } => {
            hub.send(Command::Deliver {
                users: user_ids,
                frame: Frame {
                    text: Arc::from(frame.get()),
                    at: None,
                    committed_us: None,
                },
            });
        }
        // Resolved and delivered by its own task, coalesced: never waited for here.
        BusEvent::Presence { user_id, frame } => presence.queue(user_id, frame),
        BusEvent::MessageRef {
            conversation_id,
            message_id,
            event,
        } => {
            let conn = Conn::get(primary, Route::BACKGROUND).await?;
            let Some(message) = load_message(&conn, message_id).await? else {
                return Ok(());
            };
            drop(conn);
            let at = Some((conversation_id, message.rev));
            // A reply's quote goes only to those who can see its parent (issue 14).
            let parent = message.quote.as_ref().map(|q| q.seq);
            let seeing = parent.unwrap_or(message.seq);
            let users = recipients(primary, conversation_id, Some(seeing), None, &[]).await?;
            hub.send(Command::Deliver {
                users,
                frame: Frame {
                    text: Arc::from(message_frame(event, &message)),
                    at,
                    committed_us: None,
                },
            });
            if let Some(parent) = parent {
                let blind = recipients(
                    primary,
                    conversation_id,
                    Some(message.seq),
                    parent.into(),
                    &[],
                )
                .await?;
                let message = message.seen_from(parent + 1);
                hub.send(Command::Deliver {
                    users: blind,
                    frame: Frame {
                        text: Arc::from(message_frame(event, &message)),
                        at,
                        committed_us: None,
                    },
                });
            }
        }
    }
    Ok(())
}

/// Current participants of a conversation who can see message `seq` (all of them when
/// `None`) and, with `joined_after`, whose visible range starts after that `seq`; read on the
/// primary so that a removal takes effect for the very next event.
async fn recipients(
    primary: &Pool,
    conversation_id: Uuid,
    seq: Option<i64>,
    joined_after: Option<i64>,
    exclude: &[Uuid],
) -> anyhow::Result<Vec<Uuid>> {
    let conn = Conn::get(primary, Route::BACKGROUND).await?;
    let stmt = conn
        .prepare_cached(
            "SELECT user_id FROM messaging.participants
             WHERE conversation_id = $1 AND left_at IS NULL
               AND ($2::bigint IS NULL OR visible_from_seq <= $2)
               AND ($3::bigint IS NULL OR visible_from_seq > $3)",
        )
        .await?;
    Ok(conn
        .query(&stmt, &[&conversation_id, &seq, &joined_after])
        .await?
        .iter()
        .map(|r| r.get::<_, Uuid>(0))
        .filter(|u| !exclude.contains(u))
        .collect())
}
