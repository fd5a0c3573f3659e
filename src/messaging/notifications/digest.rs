//! Mail for missed messages (issue 19): a digest per conversation window. The notification
//! worker widens a user's `messaging.email_digests` row for a conversation as messages
//! arrive; once it is due (`EMAIL_DIGEST_DELAY_SECS` after the first), this worker takes it
//! and — if some of those messages are still unread, the user is still away (no socket),
//! mail is still on and the address is verified — writes one mail with the unread messages
//! (at most [`SHOWN`]; only who and how many when previews are off) to
//! `messaging.mail_outbox`, in the same transaction, for the shared
//! outbox worker ([`crate::platform::mail`]) to deliver. During quiet hours it waits.
//!
//! Each mail carries a one-click unsubscribe link (RFC 8058): `List-Unsubscribe` with
//! `List-Unsubscribe-Post`, pointing at `POST /api/notifications/unsubscribe?u=&t=`, where
//! `t` is an HMAC of the user id under `CONSISTENCY_TOKEN_SECRET` (domain-separated), so the
//! link works without signing in and for that user only.

use std::time::Duration;

use actix_web::{
    web::{self, Query},
    HttpResponse,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Deserialize;
use uuid::Uuid;

use super::super::State;
use crate::platform::{
    db::Traced,
    error::ApiError,
    mail::{html, Mail, Outbox},
    tasks::Tasks,
};

/// Unread messages one digest shows at most (it says how many more there are).
pub const SHOWN: i64 = 10;
/// Digests one pass takes at most.
const BATCH: i64 = 20;
/// How long a digest due in quiet hours waits before it is looked at again.
const QUIET_RETRY: Duration = Duration::from_secs(600);

/// The MAC input of a user's unsubscribe link (the label keeps it apart from consistency
/// tokens, which are MACs under the same key).
fn unsubscribe_message(user: Uuid) -> Vec<u8> {
    let mut m = b"switchboard unsubscribe v1:".to_vec();
    m.extend_from_slice(user.as_bytes());
    m
}

/// The one-click unsubscribe URL of `user`'s digests.
pub fn unsubscribe_url(state: &State, user: Uuid) -> String {
    let tag = state.cfg.consistency_keys.sign(&unsubscribe_message(user));
    format!(
        "{}/api/notifications/unsubscribe?u={user}&t={}",
        state.cfg.mail.public_url.trim_end_matches('/'),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Takes due digests (at most `{batch}`, [`BATCH`]: a literal, so that the statement is
/// planned once per connection, as the notification worker's pass) off the table; with
/// each, what deciding needs: the participant's read marker and visible range, whether they
/// are online, their settings (mail on, quiet hours now) — NULLs when they are no longer a
/// participant.
const TAKE: &str = "
WITH due AS (
    DELETE FROM messaging.email_digests d
    WHERE (d.user_id, d.conversation_id) IN (
        SELECT user_id, conversation_id FROM messaging.email_digests
        WHERE due_at <= now() ORDER BY due_at LIMIT {batch} FOR UPDATE SKIP LOCKED)
    RETURNING d.*
)
SELECT d.user_id, d.conversation_id, d.first_seq, d.last_seq,
       p.last_read_seq, p.visible_from_seq, c.is_group, c.name,
       coalesce(pr.online, false) AS online,
       coalesce(s.email, true) AS email_on,
       coalesce(s.previews, true) AS previews,
       coalesce(p.muted_until > now(), false) AS muted,
       {quiet} AS quiet
FROM due d
JOIN messaging.conversations c ON c.id = d.conversation_id
LEFT JOIN messaging.participants p ON p.conversation_id = d.conversation_id
 AND p.user_id = d.user_id AND p.left_at IS NULL
LEFT JOIN messaging.notification_settings s ON s.user_id = d.user_id
LEFT JOIN messaging.presence pr ON pr.user_id = d.user_id";

/// Starts the digest worker: a pass every `poll`.
pub fn spawn(state: State, outbox: Outbox, poll: Duration, tasks: &Tasks) {
    let take = TAKE
        .replace("{quiet}", super::preferences::QUIET_NOW)
        .replace("{batch}", &BATCH.to_string());
    tasks.spawn("digest worker", async move {
        loop {
            match pass(&state, &outbox, &take).await {
                Ok(n) if n >= BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "digest pass failed"),
            }
            tokio::time::sleep(poll).await;
        }
    });
}

async fn pass(state: &State, outbox: &Outbox, take: &str) -> Result<usize, ApiError> {
    let mut conn = state.db.primary().await?;
    let tx = conn.transaction().await?;
    let due = tx.query_t(take, &[]).await?;
    let mut mailed = 0;
    for d in &due {
        let user: Uuid = d.get("user_id");
        let conversation: Uuid = d.get("conversation_id");
        let Some(read) = d.get::<_, Option<i64>>("last_read_seq") else {
            continue; // no longer a participant
        };
        let last: i64 = d.get("last_seq");
        if read >= last
            || d.get::<_, bool>("online")
            || !d.get::<_, bool>("email_on")
            || d.get::<_, bool>("muted")
        {
            continue; // read, back, or no longer wanted
        }
        if d.get::<_, bool>("quiet") {
            tx.execute_t(
                "INSERT INTO messaging.email_digests (user_id, conversation_id, first_seq, last_seq, due_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                 ON CONFLICT (user_id, conversation_id) DO UPDATE SET
                     first_seq = LEAST(messaging.email_digests.first_seq, EXCLUDED.first_seq)",
                &[
                    &user,
                    &conversation,
                    &d.get::<_, i64>("first_seq"),
                    &last,
                    &QUIET_RETRY.as_secs_f64(),
                ],
            )
            .await?;
            continue;
        }
        let Some(address) = tx
            .query_opt_t(
                "SELECT email, display_name FROM auth.mail_address($1)",
                &[&user],
            )
            .await?
        else {
            continue; // no verified address: never mailed
        };
        let from = read
            .max(d.get::<_, i64>("first_seq") - 1)
            .max(d.get::<_, i64>("visible_from_seq") - 1);
        let messages = tx
            .query_t(
                "SELECT m.seq, m.kind, m.content, coalesce(u.display_name, 'Someone') AS sender,
                        count(*) OVER () AS total
                 FROM messaging.messages m
                 LEFT JOIN auth.public_profiles u ON u.id = m.sender_id
                 WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq <= $3
                   AND m.deleted_at IS NULL AND m.kind <> 'system' AND m.sender_id <> $4
                 ORDER BY m.seq LIMIT $5",
                &[&conversation, &from, &last, &user, &SHOWN],
            )
            .await?;
        if messages.is_empty() {
            continue;
        }
        let mail = digest_mail(state, d, user, &address, &messages);
        outbox.enqueue(&tx, mail).await?;
        mailed += 1;
    }
    tx.commit().await?;
    if mailed > 0 {
        outbox.notify();
        tracing::info!(digests = mailed, "digests written");
    }
    Ok(due.len())
}

/// The digest: "N new messages in <conversation>", each message with its sender, a link to
/// the conversation, and the unsubscribe link.
fn digest_mail(
    state: &State,
    digest: &tokio_postgres::Row,
    user: Uuid,
    address: &tokio_postgres::Row,
    messages: &[tokio_postgres::Row],
) -> Mail {
    let total: i64 = messages.first().map(|m| m.get("total")).unwrap_or(0);
    let conversation: Uuid = digest.get("conversation_id");
    let place = if digest.get::<_, bool>("is_group") {
        digest
            .get::<_, Option<String>>("name")
            .map(|n| format!("in {n}"))
            .unwrap_or_else(|| "in a group".into())
    } else {
        format!("from {}", messages[0].get::<_, String>("sender"))
    };
    let subject = if total == 1 {
        format!("1 new message {place}")
    } else {
        format!("{total} new messages {place}")
    };
    let public = state.cfg.mail.public_url.trim_end_matches('/');
    let link = format!("{public}/#conversation={conversation}");
    let unsubscribe = unsubscribe_url(state, user);
    // Previews off: who and how many, never the text.
    let previews: bool = digest.get("previews");
    let mut lines: Vec<String> = messages
        .iter()
        .filter(|_| previews)
        .map(|m| {
            let text = match (
                m.get::<_, &str>("kind"),
                m.get::<_, Option<String>>("content"),
            ) {
                ("file", Some(caption)) => format!("(a file) {caption}"),
                ("file", None) => "(a file)".into(),
                (_, content) => content.unwrap_or_default(),
            };
            let text = crate::platform::text::preview(&text, crate::platform::text::PREVIEW_CHARS);
            format!("{}: {text}", m.get::<_, String>("sender"))
        })
        .collect();
    if !previews {
        lines.push("Open Switchboard to read them (message previews are off).".into());
    } else if total > SHOWN {
        lines.push(format!("… and {} more.", total - SHOWN));
    }
    let name: String = address.get("display_name");
    let greeting = format!("Hi {name}, while you were away:");
    let footer = "You get this because mail for missed messages is on. Turn it off in Switchboard's settings, or with the unsubscribe link.".to_owned();
    let mut paragraphs = vec![greeting.clone()];
    paragraphs.extend(lines.iter().cloned());
    paragraphs.push(footer.clone());
    let mut html_body = html(
        &subject,
        &paragraphs,
        Some(("Open the conversation", &link)),
    );
    html_body = html_body.replace(
        "</body></html>",
        &format!(
            "<p><a href=\"{}\">Unsubscribe</a></p></body></html>",
            html_escape::encode_double_quoted_attribute(&unsubscribe)
        ),
    );
    Mail {
        kind: "digest",
        to: address.get("email"),
        subject,
        text: format!(
            "{greeting}\n\n{}\n\nOpen the conversation: {link}\n\n{footer}\nUnsubscribe: {unsubscribe}\n",
            lines.join("\n")
        ),
        html: html_body,
        list_unsubscribe: Some(unsubscribe),
    }
}

/// `…/unsubscribe` query: the user and their link's MAC.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct UnsubscribeQuery {
    pub u: Uuid,
    /// base64url HMAC-SHA256 of the user id (from the mail).
    #[param(max_length = 64)]
    pub t: String,
}

fn verified(state: &State, q: &UnsubscribeQuery) -> Result<(), ApiError> {
    let tag = URL_SAFE_NO_PAD
        .decode(q.t.trim_end_matches('='))
        .unwrap_or_default();
    if state
        .cfg
        .consistency_keys
        .verify(&unsubscribe_message(q.u), &tag)
    {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "this unsubscribe link is not valid".into(),
        ))
    }
}

/// `POST /api/notifications/unsubscribe?u=&t=` (RFC 8058 one-click, no sign-in): turns the
/// user's digest mail off. 200; 400 for a link whose MAC does not check out.
#[utoipa::path(post, path = "/api/notifications/unsubscribe", tag = "notifications",
    operation_id = "unsubscribe_digests", params(UnsubscribeQuery), security(()),
    responses((status = 200, description = "Mail for missed messages is off.")))]
pub async fn unsubscribe(
    state: web::Data<State>,
    query: Query<UnsubscribeQuery>,
) -> Result<HttpResponse, ApiError> {
    verified(&state, &query)?;
    let conn = state.db.primary().await?;
    conn.execute_t(
        "INSERT INTO messaging.notification_settings (user_id, email) VALUES ($1, false)
         ON CONFLICT (user_id) DO UPDATE SET email = false, updated_at = now()",
        &[&query.u],
    )
    .await?;
    tracing::info!(user.id = %query.u, "digest mail turned off by its unsubscribe link");
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("You will get no more mail for missed messages. Turn it back on in Switchboard's settings.\n"))
}

/// `GET /api/notifications/unsubscribe?u=&t=`: a page with a button that POSTs the same URL
/// (a GET never unsubscribes: mail scanners follow links, RFC 8058 §3.2). 400 for a bad link.
#[utoipa::path(get, path = "/api/notifications/unsubscribe", tag = "notifications",
    operation_id = "unsubscribe_digests_page", params(UnsubscribeQuery), security(()),
    responses((status = 200, description = "A page asking to confirm.", content_type = "text/html")))]
pub async fn unsubscribe_page(
    state: web::Data<State>,
    query: Query<UnsubscribeQuery>,
) -> Result<HttpResponse, ApiError> {
    verified(&state, &query)?;
    let action = format!(
        "/api/notifications/unsubscribe?u={}&t={}",
        query.u,
        html_escape::encode_double_quoted_attribute(&query.t)
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
             <body><h1>Stop mail for missed messages?</h1>\
             <form method=\"post\" action=\"{action}\"><button type=\"submit\">Unsubscribe</button></form>\
             </body></html>"
        )))
}
