//! Mail for missed messages (issue 19): one digest per conversation window after
//! `EMAIL_DIGEST_DELAY_SECS` (2 s in the test stack), read from the stack's SMTP server; none
//! for messages read in time, none to an unverified address; the RFC 8058 one-click
//! unsubscribe works without signing in and only with a valid link.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

const MAIL_WAIT: Duration = Duration::from_secs(15);

fn address(user: &User) -> String {
    format!("{}@example.com", user.username)
}

/// A user whose address is verified (the sign-up mail's link followed).
async fn verified(prefix: &str) -> User {
    let user = register(prefix).await;
    let mail = await_mails(&address(&user), 1, MAIL_WAIT).await.remove(0);
    let body = json!({"token": mail.link_token("verify-email")}).to_string();
    let (s, _, b) = raw(
        Method::POST,
        "/auth/email/verify",
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    user
}

fn digests_to(user: &User) -> Vec<ReceivedMail> {
    mails_to(&address(user))
        .into_iter()
        .filter(|m| m.subject.contains("new message"))
        .collect()
}

#[tokio::test]
async fn an_away_user_gets_one_digest_per_conversation_and_can_unsubscribe_in_one_click() {
    let (alice, bob) = (register("dig_a").await, verified("dig_b").await);
    let conversation = alice.direct_with(&bob).await;
    for text in ["first thing", "second thing", "third thing"] {
        alice.send(&conversation, text).await;
    }
    // One mail for the three, after the delay.
    let mail = await_mails(&address(&bob), 2, MAIL_WAIT).await.remove(1);
    assert_eq!(
        mail.subject,
        format!("3 new messages from {}", alice.username),
        "{mail:?}"
    );
    for text in ["first thing", "second thing", "third thing"] {
        assert!(mail.text.contains(text), "{}", mail.text);
    }
    assert!(mail
        .text
        .contains(&format!("/#conversation={conversation}")));
    assert_eq!(mail.list_unsubscribe_post, "List-Unsubscribe=One-Click");
    let url = mail
        .list_unsubscribe
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert!(url.contains("/api/notifications/unsubscribe?u="), "{url}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(digests_to(&bob).len(), 1, "one digest for the window");

    // Read in time — after the digest was scheduled (the worker runs every 200 ms), before it
    // is due (2 s): no mail.
    let sent = alice.send(&conversation, "read quickly").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, _) = bob
        .post(
            &format!("/api/conversations/{conversation}/read"),
            json!({"seq": sent["seq"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(digests_to(&bob).len(), 1, "a read message is not mailed");

    // Muted: no digest.
    bob.mute(&conversation, true).await;
    alice.send(&conversation, "while muted").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        digests_to(&bob).len(),
        1,
        "a muted conversation mails nothing"
    );
    bob.mute(&conversation, false).await;

    // One click (a POST to the link, no sign-in): no more digests. A forged link: 400.
    let path = url
        .split_once("/api/")
        .map(|(_, p)| format!("/api/{p}"))
        .expect("path");
    let forged = path.replace("&t=", "&t=AAAA");
    let (s, h, b) = raw(Method::POST, &forged, &[], None).await;
    assert_problem(s, &h, &b, 400);
    let (s, _, page) = raw(Method::GET, &path, &[], None).await;
    assert_eq!(s, StatusCode::OK, "a GET only asks: {page}");
    let (_, settings) = bob.get("/api/notification-settings").await;
    assert_eq!(settings["email"], true, "a GET never unsubscribes");
    let (s, _, b) = raw(Method::POST, &path, &[], None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    eventually(MAIL_WAIT, || async {
        let (_, settings) = bob.get("/api/notification-settings").await;
        (settings["email"] == false).then_some(())
    })
    .await;
    alice.send(&conversation, "after unsubscribing").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(digests_to(&bob).len(), 1, "unsubscribed: no more digests");
}

#[tokio::test]
async fn an_unverified_address_is_never_mailed_a_digest() {
    let (alice, carol) = (register("dig_c").await, register("dig_d").await);
    let conversation = alice.direct_with(&carol).await;
    alice.send(&conversation, "are you there").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(digests_to(&carol).len(), 0);
}
