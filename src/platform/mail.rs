//! Mail that is never lost: the transactional outbox pattern. A change that causes a mail
//! writes it with [`enqueue`] into an outbox table in the same transaction, so the mail
//! exists exactly when the change committed; the [`spawn`]ed worker delivers due rows over
//! SMTP (lettre), each with a text and an HTML body (`multipart/alternative`, RFC 2046) and
//! its own `Message-ID` (RFC 5322 §3.6.4).
//!
//! Delivery: the worker claims due rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL docs,
//! SELECT, "The Locking Clause") by moving their next attempt a lease ahead, commits, and
//! only then talks to the relay, so two instances never send one row at once and no
//! transaction waits on SMTP. A refused or failed attempt is retried after a wait that
//! doubles from 1 s up to `MAIL_RETRY_MAX_SECS`; a relay that is down only delays mail. The
//! one window left: the relay took the mail and the instance died before recording it —
//! that row goes out once more when its lease ends (same `Message-ID`, which receivers use
//! to drop duplicates). Once a stopping service tells its tasks to stop (after its HTTP
//! server has stopped), the worker claims no more rows and lets the sends it has in flight
//! finish and be recorded, so a restart does not open that window — within the service's
//! grace for its tasks (5 s): a pass still under way then (a relay slower than that; a send
//! may take up to 10 s) is cut, and its rows go out when their lease ends.
//! Once sent, a row's bodies are cleared: their single-use links are secrets.
//!
//! The rows of a claim (at most [`BATCH`]) are sent at once, each on a connection of its own
//! from lettre's pool (which opens one per send in flight and keeps up to 10 idle), not one
//! after another: lettre 0.11.23 leaves
//! Nagle's algorithm on (RFC 896; no `TCP_NODELAY`) and writes a message's final
//! `CRLF.CRLF` apart from its body, so every mail waits for the relay's delayed ACK (40 ms
//! on Linux) before the relay sees its end. One at a time, that held a worker to about 20
//! mails a second against a local relay whatever the relay's speed (strace: 47 ms between
//! the body and the relay's `250`); ten at a time wait out those ACKs together. (Setting
//! `TCP_NODELAY` is merged in lettre, lettre/lettre#1159, and not yet released.)

use std::{sync::Arc, time::Duration};

use anyhow::{anyhow, Context};
use lettre::{
    message::{
        header::{HeaderName, HeaderValue},
        Mailbox, MultiPart,
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use crate::platform::{
    config::MailSettings,
    db::{self, Primary, Traced},
    tasks::Tasks,
};

/// One mail to write to an outbox.
#[derive(Debug, Clone)]
pub struct Mail {
    /// What caused it (`verify_email`, `password_reset`, …): for operators and tests.
    pub kind: &'static str,
    /// One address (already validated).
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A one-click unsubscribe URL (RFC 8058): sent as `List-Unsubscribe` with
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    pub list_unsubscribe: Option<String>,
}

/// A mail's HTML body: a heading, paragraphs (each escaped) and an optional link button
/// `(label, href)`.
pub fn html(title: &str, paragraphs: &[String], link: Option<(&str, &str)>) -> String {
    let mut body = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h1>{}</h1>",
        html_escape::encode_text(title)
    );
    for p in paragraphs {
        body.push_str(&format!("<p>{}</p>", html_escape::encode_text(p)));
    }
    if let Some((label, href)) = link {
        body.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            html_escape::encode_double_quoted_attribute(href),
            html_escape::encode_text(label)
        ));
    }
    body.push_str("</body></html>");
    body
}

/// Where mail goes out from: the sender, the domain of `Message-ID`s, and the wake-up of the
/// worker. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    /// The outbox table (a trusted constant such as `auth.mail_outbox`).
    table: &'static str,
    /// `MAIL_FROM`, parsed once: the sender, and the domain of `Message-ID`s.
    from: Arc<Mailbox>,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox writing to `table`; `Message-ID`s take the domain of `MAIL_FROM`.
    ///
    /// Errors: `MAIL_FROM` is not a mailbox.
    pub fn new(table: &'static str, settings: &MailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("MAIL_FROM {:?} is not a mailbox", settings.from))?;
        Ok(Self {
            table,
            from: Arc::new(from),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Writes `mail` in the caller's transaction (`tx`) and, once it commits, lets the worker
    /// know. Returns the row's id.
    ///
    /// Errors: the insert fails (the caller's transaction then fails with it).
    pub async fn enqueue(
        &self,
        tx: &impl Traced,
        mail: Mail,
    ) -> Result<Uuid, tokio_postgres::Error> {
        let id = Uuid::now_v7();
        let message_id = format!("{id}@{}", self.from.email.domain());
        tx.execute_t(
            &format!(
                "INSERT INTO {} (id, kind, recipient, subject, body_text, body_html, message_id,
                                 list_unsubscribe)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.table
            ),
            &[
                &id,
                &mail.kind,
                &mail.to,
                &mail.subject,
                &mail.text,
                &mail.html,
                &message_id,
                &mail.list_unsubscribe,
            ],
        )
        .await?;
        Ok(id)
    }

    /// Wakes the worker (call after the transaction that enqueued committed; a missed wake-up
    /// only delays the mail to the next poll).
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// Rows one pass takes at most, all sent at once, so also the most SMTP connections a worker
/// holds (lettre's pool keeps up to 10 of them idle, its default `PoolConfig::max_size`).
const BATCH: i64 = 10;
/// Outcomes recorded at once, each on a primary connection of its own: a pass's sends end
/// together, and ten records at once would hold ten of the pool's connections (16 by
/// default) that requests wait for.
const RECORDING: usize = 2;
/// How long a claimed row is left to the instance that claimed it.
const LEASE: Duration = Duration::from_secs(120);
/// The longest one send may take (well inside [`LEASE`]: a pass's sends run at once, so a
/// pass takes about one `SEND_TIMEOUT` and its records).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the delivery worker for `outbox` on `db`, sending through `MAIL`'s relay. Without
/// `SMTP_URL` nothing is sent (mail stays queued) and a warning says so.
///
/// Errors: the SMTP URL or `MAIL_FROM` do not parse.
pub fn spawn(
    outbox: &Outbox,
    db: Primary,
    settings: &MailSettings,
    tasks: &Tasks,
) -> anyhow::Result<()> {
    let Some(url) = &settings.smtp_url else {
        tracing::warn!(
            table = outbox.table,
            "SMTP_URL is not set: mail is queued, not sent"
        );
        return Ok(());
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
        .context("SMTP_URL is not a usable SMTP URL")?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let worker = Worker {
        outbox: outbox.clone(),
        db,
        transport,
        retry_max: settings.retry_max,
        recording: Semaphore::new(RECORDING),
    };
    let poll = settings.poll_interval;
    let wake = outbox.wake.clone();
    // Stops between passes, never inside one: a mail the relay took is recorded (unless the
    // service's grace for its tasks ends first; see the module's documentation).
    let stopping = tasks.clone();
    tasks.spawn_graceful(async move {
        while !stopping.is_stopping() {
            loop {
                match worker.pass().await {
                    Ok(n) if n < BATCH as usize => break,
                    Ok(_) if stopping.is_stopping() => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "mail outbox pass failed");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::timeout(poll, wake.notified()) => {}
                _ = stopping.stopping() => {}
            }
        }
    });
    Ok(())
}

struct Worker {
    outbox: Outbox,
    db: Primary,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    retry_max: Duration,
    /// Turns to record an outcome ([`RECORDING`]).
    recording: Semaphore,
}

impl Worker {
    /// Claims the due rows (at most [`BATCH`]) and sends them; returns how many it took.
    ///
    /// A claim is a lease: in one short transaction the rows are locked (`SKIP LOCKED`: rows
    /// another instance holds are passed over), their attempt counted and their next attempt
    /// moved [`LEASE`] ahead, then committed — so no transaction stays open while the relay
    /// talks, and no other instance takes them while this one sends. Each outcome is then
    /// written on its own: sent (bodies cleared), or the next attempt after the retry wait.
    /// An instance that dies mid-send leaves the lease to expire and the mail to be retried.
    async fn pass(&self) -> anyhow::Result<usize> {
        let table = self.outbox.table;
        let mut db = self.db.get().await?;
        let tx = db.transaction().await?;
        let rows = tx
            .query_t(
                &format!(
                    "UPDATE {table} SET attempts = attempts + 1,
                         next_attempt_at = now() + make_interval(secs => $2)
                     WHERE id IN (SELECT id FROM {table}
                                  WHERE sent_at IS NULL AND next_attempt_at <= now()
                                  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, recipient, subject, body_text, body_html, message_id,
                               list_unsubscribe, attempts"
                ),
                &[&BATCH, &LEASE.as_secs_f64()],
            )
            .await?;
        tx.commit().await?;
        drop(db);
        // All at once, and every one to its end (sent and recorded) even if another fails.
        let delivered =
            futures_util::future::join_all(rows.iter().map(|row| self.deliver(row))).await;
        delivered.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(rows.len())
    }

    /// Sends one claimed row and records the outcome.
    ///
    /// Errors: the outcome could not be recorded (twice); the row is then sent again when its
    /// lease ends.
    async fn deliver(&self, row: &tokio_postgres::Row) -> anyhow::Result<()> {
        let id: Uuid = row.get("id");
        let attempts: i32 = row.get("attempts");
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.send(row))
            .await
            .unwrap_or_else(|_| Err(anyhow!("the relay took longer than {SEND_TIMEOUT:?}")));
        let outcome = match sent {
            Ok(()) => {
                tracing::info!(mail.id = %id, "mail sent");
                None
            }
            Err(e) => {
                let wait = retry_wait(attempts - 1, self.retry_max);
                let error = format!("{e:#}");
                tracing::warn!(mail.id = %id, attempts, retry_in_s = wait.as_secs(),
                               error, "mail not sent; will retry");
                Some((error, wait))
            }
        };
        // On a connection of its own (and a second if that one is lost): a sent mail left
        // unrecorded would go out again when its lease ends. At most RECORDING at once: the
        // pool's other connections stay free for requests.
        let _turn = self.recording.acquire().await?;
        let recorded = db::record_twice("mail outcome", || self.record(id, outcome.as_ref())).await;
        if let Err(e) = &recorded {
            tracing::warn!(mail.id = %id, sent = outcome.is_none(), error = format!("{e:#}"),
                           "mail outcome not recorded; tried again when its lease ends");
        }
        recorded
    }

    /// Records row `id` as sent (bodies cleared), or, with `(error, wait)`, its next attempt.
    async fn record(&self, id: Uuid, failed: Option<&(String, Duration)>) -> anyhow::Result<()> {
        let table = self.outbox.table;
        let db = self.db.get().await?;
        match failed {
            None => {
                db.execute_t(
                    &format!(
                        "UPDATE {table} SET sent_at = now(), body_text = NULL, body_html = NULL,
                             last_error = NULL
                         WHERE id = $1"
                    ),
                    &[&id],
                )
                .await?
            }
            Some((error, wait)) => {
                db.execute_t(
                    &format!(
                        "UPDATE {table} SET last_error = $2,
                             next_attempt_at = now() + make_interval(secs => $3)
                         WHERE id = $1"
                    ),
                    &[&id, error, &wait.as_secs_f64()],
                )
                .await?
            }
        };
        Ok(())
    }

    async fn send(&self, row: &tokio_postgres::Row) -> anyhow::Result<()> {
        let to: Mailbox = row
            .get::<_, String>("recipient")
            .parse()
            .map_err(|e| anyhow!("recipient: {e}"))?;
        let mut builder = Message::builder();
        if let Some(url) = row.get::<_, Option<String>>("list_unsubscribe") {
            // RFC 2369 §3.2 and RFC 8058 §3.1: one-click unsubscribe by POST to the URL.
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let message = builder
            .from(Mailbox::clone(&self.outbox.from))
            .to(to)
            .subject(row.get::<_, String>("subject"))
            .message_id(Some(format!("<{}>", row.get::<_, String>("message_id"))))
            .multipart(MultiPart::alternative_plain_html(
                row.get::<_, String>("body_text"),
                row.get::<_, String>("body_html"),
            ))
            .context("building the message")?;
        self.transport
            .send(message)
            .await
            .context("the SMTP relay did not take the mail")?;
        Ok(())
    }
}

/// The wait before attempt `attempts + 2`: 1 s doubling per failed attempt, at most `max`.
fn retry_wait(attempts: i32, max: Duration) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    Duration::from_secs(1u64 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_the_maximum() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (0..12).map(|a| retry_wait(a, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_wait(i32::MAX, max), max);
    }
}
