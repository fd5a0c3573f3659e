//! Web Push (issue 19) against the test stack's push service (scripts/push_service.py), which
//! checks the VAPID JWT with py-vapid and decrypts the payload with http_ece, as a browser
//! would: who gets a push and who does not (offline, not muted, not read, the level), at
//! most one per message per device, and what ends a subscription (the push service's 410, the
//! session's end); what a subscription may point at.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);
/// Long enough for the notification worker and the sender to have acted (both poll every
/// 200 ms), for checks that nothing came.
const QUIET: Duration = Duration::from_millis(1500);

/// The pushes `id` received, once there are `n` (none refused).
async fn received(id: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, || async {
        let s = seen(id).await;
        assert_eq!(s["refused"], json!([]), "the push service refused: {s}");
        let got = s["received"].as_array()?.clone();
        (got.len() >= n).then_some(got)
    })
    .await
}

async fn subscribe(user: &User, subscription: &Value) -> String {
    let (s, body) = user
        .post("/api/push/subscriptions", subscription.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Two new users (`{prefix}_a`, `{prefix}_b`) in a direct conversation, the second subscribed
/// to pushes from a browser of the push service: (sender, recipient, conversation, browser).
async fn subscribed_pair(prefix: &str) -> (User, User, String, String) {
    let alice = register(&format!("{prefix}_a")).await;
    let bob = register(&format!("{prefix}_b")).await;
    let conversation = alice.direct_with(&bob).await;
    let (browser, subscription) = browser_subscription().await;
    subscribe(&bob, &subscription).await;
    (alice, bob, conversation, browser)
}

async fn subscriptions_of(user: &User) -> i64 {
    let admin = admin(false).await;
    let id: uuid::Uuid = user.id.parse().expect("uuid");
    admin
        .query_one(
            "SELECT count(*) FROM messaging.push_subscriptions WHERE user_id = $1",
            &[&id],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn an_offline_recipient_gets_one_verified_encrypted_push_per_message() {
    let (alice, bob, conversation, browser) = subscribed_pair("push").await;
    let (s, key) = bob.get("/api/push/key").await;
    assert_eq!(s, StatusCode::OK, "{key}");

    // A mention: one push, decrypted by the push service, signed with the server's key.
    let sent = alice
        .send(&conversation, &format!("@{} look at this", bob.username))
        .await;
    let push = received(&browser, 1).await.remove(0);
    let payload = &push["payload"];
    assert_eq!(payload["type"], "message", "{push}");
    assert_eq!(payload["message_id"], sent["id"]);
    assert_eq!(payload["conversation_id"], conversation.as_str());
    assert_eq!(payload["seq"], sent["seq"]);
    assert_eq!(payload["mention"], true);
    assert_eq!(
        payload["preview"],
        format!("@{} look at this", bob.username)
    );
    assert_eq!(push["urgency"], "high");
    assert_eq!(push["ttl"], 86400);
    assert_eq!(push["vapid_key"], key["public_key"]);
    assert_eq!(push["claims"]["sub"], "mailto:push@switchboard.localhost");

    // An edit queues the message again: still one push for it.
    let id = sent["id"].as_str().expect("id");
    let (s, _, _) = alice
        .call(
            Method::PATCH,
            &format!("/api/messages/{id}"),
            Some(json!({"content": format!("@{} look at this one", bob.username)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // A direct conversation notifies for every message (the default level `all`), without
    // urgency; previews off leave only who and where.
    let mut settings = bob.get("/api/notification-settings").await.1;
    settings["previews"] = json!(false);
    let (s, _, _) = bob
        .call(Method::PUT, "/api/notification-settings", Some(settings))
        .await;
    assert_eq!(s, StatusCode::OK);
    alice.send(&conversation, "plain words").await;
    let pushes = received(&browser, 2).await;
    tokio::time::sleep(QUIET).await;
    let pushes_after = received(&browser, 2).await;
    assert_eq!(
        pushes_after.len(),
        2,
        "one push per message: {pushes_after:?}"
    );
    assert_eq!(pushes[1]["payload"]["mention"], false);
    assert_eq!(pushes[1]["urgency"], "normal");
    assert!(pushes[1]["payload"]["preview"].is_null(), "{}", pushes[1]);

    // Muted: nothing. Online (a socket open): nothing.
    bob.mute(&conversation, true).await;
    alice
        .send(&conversation, &format!("@{} muted", bob.username))
        .await;
    // (Mutes apply when the worker takes the message: let it, before unmuting.)
    tokio::time::sleep(QUIET).await;
    bob.mute(&conversation, false).await;
    let mut ws = bob.socket().await;
    let _ = next_event(&mut ws, "hello", WAIT).await;
    let admin = admin(false).await;
    let bob_id: uuid::Uuid = bob.id.parse().expect("uuid");
    eventually(WAIT, || async {
        let row = admin
            .query_opt(
                "SELECT online FROM messaging.presence WHERE user_id = $1",
                &[&bob_id],
            )
            .await
            .ok()??;
        row.get::<_, bool>(0).then_some(())
    })
    .await;
    let online = alice
        .send(&conversation, &format!("@{} while online", bob.username))
        .await;
    let _ = next_event(&mut ws, "message.created", WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        received(&browser, 2).await.len(),
        2,
        "muted and online: no push"
    );
    drop(ws);
    assert!(online["id"].is_string());
}

/// A file message and a forwarded message notify like a typed one: each was appended by its
/// own statement, not the group commit's, and neither was ever queued for the notification
/// worker (found 2026-12-03: an offline recipient got no push for either).
#[tokio::test]
async fn a_file_and_a_forward_reach_an_offline_recipient_too() {
    let (alice, _, conversation, browser) = subscribed_pair("pushf").await;

    let (s, file, _) = upload_bytes(&alice, &conversation, 64).await;
    assert_eq!(s, StatusCode::CREATED, "{file}");
    let push = received(&browser, 1).await.remove(0);
    assert_eq!(push["payload"]["message_id"], file["id"], "{push}");
    assert_eq!(push["payload"]["seq"], file["seq"]);

    // Alice forwards a message of another conversation of hers into this one.
    let carol = register("pushf_c").await;
    let elsewhere = alice.direct_with(&carol).await;
    let original = alice.send(&elsewhere, "worth passing on").await;
    let (s, copy) = alice
        .post(
            &format!(
                "/api/messages/{}/forward",
                original["id"].as_str().expect("id")
            ),
            json!({"conversation_id": conversation, "client_id": "pushf-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{copy}");
    let pushes = received(&browser, 2).await;
    assert_eq!(pushes[1]["payload"]["message_id"], copy["id"], "{pushes:?}");
    assert_eq!(pushes[1]["payload"]["preview"], "worth passing on");
    tokio::time::sleep(QUIET).await;
    assert_eq!(received(&browser, 2).await.len(), 2, "one push each");
}

#[tokio::test]
async fn a_read_message_is_not_pushed_late_and_a_gone_subscription_is_dropped() {
    let (alice, bob, conversation, browser) = subscribed_pair("pushr").await;

    // The push service refuses (500): retried. Read meanwhile: not sent again.
    push_service_answers(&browser, 500, Duration::ZERO).await;
    let sent = alice.send(&conversation, "read me soon").await;
    let first = received(&browser, 1).await;
    assert_eq!(first[0]["answered"], 500);
    let (s, _) = bob
        .post(
            &format!("/api/conversations/{conversation}/read"),
            json!({"seq": sent["seq"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    push_service_answers(&browser, 201, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = received(&browser, 1).await;
    assert_eq!(after.len(), 1, "a read message is not pushed: {after:?}");

    // A recipient removed from the group before the retry gets nothing either.
    let group = alice.group(&[&bob], "Pushes").await;
    push_service_answers(&browser, 500, Duration::ZERO).await;
    alice
        .send(&group, &format!("@{} before you go", bob.username))
        .await;
    let refused = received(&browser, 2).await;
    assert_eq!(refused[1]["answered"], 500);
    let (s, _, _) = alice
        .call(
            Method::DELETE,
            &format!("/api/conversations/{group}/participants/{}", bob.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    push_service_answers(&browser, 201, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        received(&browser, 2).await.len(),
        2,
        "a former member is not pushed"
    );

    // 410 Gone: the subscription is dropped.
    push_service_answers(&browser, 410, Duration::ZERO).await;
    alice.send(&conversation, "anyone there?").await;
    let _ = received(&browser, 3).await;
    eventually(WAIT, || async {
        (subscriptions_of(&bob).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn subscriptions_point_at_push_services_only_and_end_with_their_session() {
    let (bob, stranger) = (register("pushs_b").await, register("pushs_x").await);
    let (_, subscription) = browser_subscription().await;
    for endpoint in [
        "http://169.254.169.254/latest/meta-data",
        "https://fcm.googleapis.com.evil.test/send/x",
        "https://user@fcm.googleapis.com/send/x",
        "ftp://fcm.googleapis.com/send/x",
        "not a url",
    ] {
        let mut bad = subscription.clone();
        bad["endpoint"] = json!(endpoint);
        let (s, h, b) = bob
            .call(Method::POST, "/api/push/subscriptions", Some(bad))
            .await;
        assert_problem(s, &h, &b, 422);
        assert!(b["errors"]["endpoint"].is_array(), "{endpoint}: {b}");
    }
    let mut bad = subscription.clone();
    bad["keys"]["p256dh"] = json!("AAAA");
    let (s, h, b) = bob
        .call(Method::POST, "/api/push/subscriptions", Some(bad))
        .await;
    assert_problem(s, &h, &b, 422);

    // Keys with base64 padding are taken (and stored without it); an account holds at most
    // ten subscriptions.
    let (_, mut padded) = browser_subscription().await;
    let auth_key = format!("{}==", padded["keys"]["auth"].as_str().expect("auth"));
    padded["keys"]["auth"] = json!(auth_key);
    let many = register("pushs_m").await;
    subscribe(&many, &padded).await;
    for _ in 1..10 {
        let (_, another) = browser_subscription().await;
        subscribe(&many, &another).await;
    }
    let (_, eleventh) = browser_subscription().await;
    let (s, h, b) = many
        .call(Method::POST, "/api/push/subscriptions", Some(eleventh))
        .await;
    assert_problem(s, &h, &b, 409);
    assert_eq!(subscriptions_of(&many).await, 10);

    // Made by a second session; another user cannot remove it; ending that session does.
    let other = second_session(&bob).await;
    let id = subscribe(&other, &subscription).await;
    let (s, h, b) = stranger
        .call(
            Method::DELETE,
            &format!("/api/push/subscriptions/{id}"),
            None,
        )
        .await;
    assert_problem(s, &h, &b, 404);
    assert_eq!(subscriptions_of(&bob).await, 1);
    let (_, sessions) = other.get("/auth/sessions").await;
    let session = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("current session")
        .to_owned();
    let (s, _, _) = bob
        .call(Method::DELETE, &format!("/auth/sessions/{session}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        (subscriptions_of(&bob).await == 0).then_some(())
    })
    .await;
}
