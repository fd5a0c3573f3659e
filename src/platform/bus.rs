//! The event bus between service instances: PostgreSQL `NOTIFY` on the primary
//! (DESIGN.md §4; PostgreSQL docs, SQL command NOTIFY). Domain-free: it carries JSON events;
//! what they mean is the services' business (the messaging events are
//! `crate::messaging::events::BusEvent`, read by `crate::realtime::listener`).
//!
//! Writers hand events to a [`Publisher`], which sends them after the write committed, from
//! one dedicated connection, coalescing whatever is queued into `NOTIFY` payloads (JSON arrays
//! of events kept under the 8000-byte payload limit), all sent in one statement. A
//! notification that is lost (queue full, connection down) loses no data: clients see a `seq`
//! gap and fetch.

use secrecy::SecretString;
use serde::Serialize;

use crate::platform::tasks::Tasks;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// The NOTIFY channel.
pub const CHANNEL: &str = "switchboard_events";

/// Largest payload we send; PostgreSQL's limit is 8000 bytes in the default configuration.
pub const MAX_PAYLOAD: usize = 7900;

/// Events queued before the publisher drops new ones (and logs it).
const QUEUE: usize = 10_000;

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
    tx: mpsc::Sender<Box<RawValue>>,
}

impl Publisher {
    /// Starts the publishing task on its own connection to `primary_url` (reconnecting with
    /// back-off while the primary is unreachable).
    /// When the service stops, what is already queued is still sent (if the primary can be
    /// reached at once), then the task ends.
    /// Its connection is named `application_name` in `pg_stat_activity`.
    pub fn spawn(primary_url: SecretString, application_name: String, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn_graceful(run(primary_url, application_name, rx, tasks.clone()));
        Self { tx }
    }

    /// Queues an event (any JSON-serializable value) without waiting. Call only after the
    /// write it announces committed.
    pub fn publish<T: Serialize>(&self, event: T) {
        let event = match serde_json::value::to_raw_value(&event) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "event not serializable; dropped");
                return;
            }
        };
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "event bus queue full or closed; event dropped");
        }
    }
}

/// Serializes `events` into payloads of at most [`MAX_PAYLOAD`] bytes (JSON arrays), dropping
/// (and logging) any single event that cannot fit.
pub fn batch_payloads<T: Serialize>(events: &[T]) -> Vec<String> {
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

/// Prepares the publisher's one statement: it sends a whole list of payloads, in list order,
/// in one transaction (one round trip however many payloads a backlog fills; before, one
/// round trip and one transaction per payload).
///
/// That transaction takes a transaction id but (but for the rare id that starts a new
/// commit-log page) writes no WAL before its commit record, so PostgreSQL commits it without
/// waiting for a flush (`RecordTransactionCommit` flushes only for a transaction that wrote
/// WAL): a live delivery waits for one disk flush, its send's own. (Checked: with
/// `commit_delay` = 100 ms and `commit_siblings` = 0 on the service's role, a frame reached
/// its socket within 60 ms of the send's answer.) PostgreSQL folds byte-identical
/// notifications of one transaction into one: two payloads of one backlog would have to hold
/// the same run of events, up to 7900 bytes of them, to be folded — practically never, as
/// message events carry ids, revisions and times.
async fn prepare(
    client: &tokio_postgres::Client,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    client
        .prepare("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .await
}

async fn run(
    url: SecretString,
    application_name: String,
    mut rx: mpsc::Receiver<Box<RawValue>>,
    tasks: Tasks,
) {
    use backon::Retryable;
    let mut pending: Vec<Box<RawValue>> = Vec::new();
    let mut stopping = false;
    loop {
        let connect = (|| crate::platform::db::connect(&url, &application_name))
            .retry(crate::platform::db::reconnect_backoff())
            .notify(|e, after| {
                tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "publisher cannot reach the primary");
            });
        let connected = tokio::select! {
            c = connect => c,
            _ = tasks.stopping() => return,
        };
        let Ok((client, conn)) = connected else {
            continue;
        };
        let stmt = match prepare(&client).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "publisher prepare failed");
                continue;
            }
        };
        loop {
            if pending.is_empty() {
                if stopping {
                    return;
                }
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => pending.push(e),
                        None => return,
                    },
                    _ = tasks.stopping() => stopping = true,
                }
            }
            // Coalesce everything already queued into as few NOTIFYs as fit.
            while stopping || pending.len() < 512 {
                match rx.try_recv() {
                    Ok(e) => pending.push(e),
                    Err(_) => break,
                }
            }
            let payloads = batch_payloads(&pending);
            let failed = !payloads.is_empty()
                && match client.execute(&stmt, &[&CHANNEL, &payloads]).await {
                    Ok(_) => false,
                    Err(e) => {
                        // One transaction: none of them was sent.
                        tracing::warn!(error = %e, dropped = pending.len(), "NOTIFY failed; events dropped; reconnecting");
                        true
                    }
                };
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

    fn ev(n: usize) -> serde_json::Value {
        serde_json::json!({"event": {"pad": "x".repeat(n)}})
    }

    #[test]
    fn batches_stay_under_the_notify_limit_and_keep_every_event() -> R {
        let events: Vec<_> = (0..50).map(|_| ev(500)).collect();
        let payloads = batch_payloads(&events);
        assert!(payloads.len() > 1);
        let mut total = 0;
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let parsed: Vec<serde_json::Value> = serde_json::from_str(p)?;
            total += parsed.len();
        }
        assert_eq!(total, 50);
        Ok(())
    }

    #[test]
    fn an_event_too_large_is_dropped_not_sent() -> R {
        let payloads = batch_payloads(&[ev(9000), ev(10)]);
        assert_eq!(payloads.len(), 1);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&payloads[0])?;
        assert_eq!(parsed.len(), 1);
        Ok(())
    }
}
