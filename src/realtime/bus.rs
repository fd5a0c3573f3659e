//! The event bus between service instances: PostgreSQL `NOTIFY` on the primary
//! (DESIGN.md §4; PostgreSQL docs, SQL command NOTIFY).
//!
//! Writers hand events to a [`Publisher`], which sends them after the write committed, from
//! one dedicated connection, coalescing whatever is queued into one `NOTIFY` whose payload is
//! a JSON array of [`BusEvent`]s kept under the 8000-byte payload limit. Every messaging
//! instance runs one listener (see [`crate::realtime::listener`]). A notification that is
//! lost (queue full, connection down) loses no data: clients see a `seq` gap and fetch.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The NOTIFY channel.
pub const CHANNEL: &str = "switchboard_events";

/// Largest payload we send; PostgreSQL's limit is 8000 bytes in the default configuration.
pub const MAX_PAYLOAD: usize = 7900;

/// Events queued before the publisher drops new ones (and logs it).
const QUEUE: usize = 10_000;

/// One event on the bus, externally tagged (`{"conversation": {…}}`): an internally tagged
/// enum would buffer the frame and cannot carry it as raw JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusEvent {
    /// Deliver `frame` (a server frame, already JSON) to the sockets of every participant of
    /// the conversation, except `exclude_user`'s.
    Conversation {
        conversation_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exclude_user: Option<Uuid>,
        /// For a stored change to a message: its `seq` (only participants who can see it get
        /// the frame) …
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_seq: Option<i64>,
        /// Only participants whose visible range starts after this `seq` (those who joined
        /// after the parent a reply quotes get the frame without the quote).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joined_after: Option<i64>,
        /// … and the conversation revision of the change (orders delivery per socket).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rev: Option<i64>,
        /// The users who may see it, when the writer knew them at commit (a new message:
        /// the appending statement returns them); otherwise each listener looks them up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipients: Option<Vec<Uuid>>,
        /// W3C `traceparent` of the request that made the change: the fan-out span links
        /// to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
        /// When the change was committed, in microseconds since the Unix epoch (for
        /// `fanout_delay_seconds`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_us: Option<i64>,
        frame: Box<RawValue>,
    },
    /// A user went online or offline: deliver `frame` to everyone who shares a conversation
    /// with them, and to their own other sockets.
    Presence { user_id: Uuid, frame: Box<RawValue> },
    /// Deliver `frame` to the sockets of the listed users (for example a participant who was
    /// just removed, and so no longer receives the conversation's events).
    Users {
        user_ids: Vec<Uuid>,
        frame: Box<RawValue>,
    },
    /// A `message.*` event whose frame is too large for NOTIFY: receivers load the message by
    /// id and build the frame themselves.
    MessageRef {
        conversation_id: Uuid,
        message_id: Uuid,
        event: crate::realtime::protocol::ServerEvent,
    },
    /// A session ended (logout, refresh token reuse, revocation): close its sockets, and
    /// refuse its access tokens from now on.
    SessionRevoked { session_id: Uuid, reason: String },
    /// These users' membership of the conversation ended (removed, or left): their sockets
    /// drop its typing state at once and follow it no more.
    MembershipEnded {
        conversation_id: Uuid,
        user_ids: Vec<Uuid>,
    },
}

/// The W3C `traceparent` of the current span (empty when tracing is off), to carry a trace
/// across the bus.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The span context a `traceparent` names, for linking to it.
pub fn span_context_of(traceparent: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Queues events for NOTIFY; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<BusEvent>,
}

impl Publisher {
    /// Starts the publishing task on its own connection to `primary_url` (reconnecting with
    /// back-off while the primary is unreachable).
    pub fn spawn(primary_url: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(primary_url, rx));
        Self { tx }
    }

    /// Queues an event without waiting. Call only after the write it announces committed.
    pub fn publish(&self, event: BusEvent) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "event bus queue full or closed; event dropped");
        }
    }
}

/// Serializes `events` into payloads of at most [`MAX_PAYLOAD`] bytes (JSON arrays), dropping
/// (and logging) any single event that cannot fit.
pub fn batch_payloads(events: &[BusEvent]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::from("[");
    for e in events {
        let Ok(text) = serde_json::to_string(e) else {
            continue;
        };
        if text.len() + 2 > MAX_PAYLOAD {
            tracing::warn!(bytes = text.len(), "event too large for NOTIFY; dropped");
            continue;
        }
        if cur.len() + text.len() + 2 > MAX_PAYLOAD {
            cur.push(']');
            out.push(std::mem::replace(&mut cur, String::from("[")));
        }
        if cur.len() > 1 {
            cur.push(',');
        }
        cur.push_str(&text);
    }
    if cur.len() > 1 {
        cur.push(']');
        out.push(cur);
    }
    out
}

async fn run(url: String, mut rx: mpsc::Receiver<BusEvent>) {
    use backon::Retryable;
    let mut pending: Vec<BusEvent> = Vec::new();
    loop {
        let connected = (|| crate::db::connect(&url, "switchboard-publisher"))
            .retry(crate::db::reconnect_backoff())
            .notify(|e, after| {
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "publisher cannot reach the primary");
            })
            .await;
        let Ok((client, conn)) = connected else {
            continue;
        };
        let stmt = match client.prepare("SELECT pg_notify($1, $2)").await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "publisher prepare failed");
                continue;
            }
        };
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(e) => pending.push(e),
                    None => return,
                }
            }
            // Coalesce everything already queued into as few NOTIFYs as fit.
            while pending.len() < 512 {
                match rx.try_recv() {
                    Ok(e) => pending.push(e),
                    Err(_) => break,
                }
            }
            let mut failed = false;
            for payload in batch_payloads(&pending) {
                if let Err(e) = client.execute(&stmt, &[&CHANNEL, &payload]).await {
                    tracing::warn!(error = %e, "NOTIFY failed; reconnecting");
                    failed = true;
                    break;
                }
            }
            pending.clear();
            if failed || conn.is_finished() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), serde_json::Error>;

    fn ev(n: usize) -> Result<BusEvent, serde_json::Error> {
        let frame = serde_json::json!({"type": "typing", "pad": "x".repeat(n)});
        Ok(BusEvent::Conversation {
            conversation_id: Uuid::nil(),
            exclude_user: None,
            message_seq: None,
            joined_after: None,
            rev: None,
            recipients: None,
            trace: None,
            at_us: None,
            frame: RawValue::from_string(frame.to_string())?,
        })
    }

    #[test]
    fn batches_stay_under_the_notify_limit_and_keep_every_event() -> R {
        let events = (0..50).map(|_| ev(500)).collect::<Result<Vec<_>, _>>()?;
        let payloads = batch_payloads(&events);
        assert!(payloads.len() > 1);
        let mut total = 0;
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let parsed: Vec<BusEvent> = serde_json::from_str(p)?;
            total += parsed.len();
        }
        assert_eq!(total, 50);
        Ok(())
    }

    #[test]
    fn an_event_too_large_is_dropped_not_sent() -> R {
        let payloads = batch_payloads(&[ev(9000)?, ev(10)?]);
        assert_eq!(payloads.len(), 1);
        let parsed: Vec<BusEvent> = serde_json::from_str(&payloads[0])?;
        assert_eq!(parsed.len(), 1);
        Ok(())
    }
}
