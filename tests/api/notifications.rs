//! Mentions, the notification feed and notification preferences (issue 19), through NGINX:
//! who a message can mention (participants only; `@all` by admins), the unread-mention
//! counts, the feed the worker writes (and its live event), and who may read or change what.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// `user`'s `mention_count` in `conversation`, once it equals `expected` (replica reads).
async fn mention_count(user: &User, conversation: &str, expected: i64) {
    eventually(WAIT, || async {
        let (_, list) = user.get("/api/conversations").await;
        let count = list["conversations"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == conversation)?["mention_count"]
            .as_i64()?;
        (count == expected).then_some(())
    })
    .await;
}

/// `user`'s feed once it has an entry for `message` (the worker writes it shortly after).
async fn feed_entry(user: &User, message: &str) -> Value {
    eventually(WAIT, || async {
        let (_, feed) = user.get("/api/notifications").await;
        feed["notifications"]
            .as_array()?
            .iter()
            .find(|n| n["message_id"] == message)
            .cloned()
    })
    .await
}

#[tokio::test]
async fn mentions_name_participants_only_and_all_is_for_admins() {
    let (alice, bob, carol) = (
        register("men_a").await,
        register("men_b").await,
        register("men_c").await,
    );
    let stranger = register("men_x").await;
    let group = alice.group(&[&bob, &carol], "Mentions").await;
    // Case does not matter; a stranger, an address and the sender are no mentions.
    let text = format!(
        "hi @{} and @{}, not @{} nor {}@example.com nor @{}",
        alice.username.to_uppercase(),
        carol.username,
        stranger.username,
        alice.username,
        bob.username
    );
    let message = bob.send(&group, &text).await;
    let mut expected = vec![alice.id.clone(), carol.id.clone()];
    expected.sort();
    assert_eq!(ids(&message["mentions"]), expected, "{message}");
    assert_eq!(message["mentions_all"], false);
    mention_count(&alice, &group, 1).await;
    mention_count(&carol, &group, 1).await;
    mention_count(&bob, &group, 0).await;

    // `@all` from a member is text; from the admin it mentions everyone but the sender.
    let by_member = bob.send(&group, "@all look").await;
    assert_eq!(by_member["mentions_all"], false);
    let by_admin = alice.send(&group, "@all meeting at 3").await;
    assert_eq!(by_admin["mentions_all"], true);
    mention_count(&bob, &group, 1).await;
    mention_count(&carol, &group, 2).await;
    // Sending moved Alice's read marker past the mention of her; reading clears Carol's.
    mention_count(&alice, &group, 0).await;
    let seq = by_admin["seq"].as_i64().expect("seq");
    let (s, _) = carol
        .post(
            &format!("/api/conversations/{group}/read"),
            json!({"seq": seq}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    mention_count(&carol, &group, 0).await;

    // A former member cannot be mentioned; `@all` is nothing in a direct conversation.
    let (s, _, _) = alice
        .call(
            Method::DELETE,
            &format!("/api/conversations/{group}/participants/{}", carol.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let after = alice
        .send(&group, &format!("@{} are you there", carol.username))
        .await;
    assert_eq!(ids(&after["mentions"]), Vec::<String>::new());
    let direct = alice.direct_with(&bob).await;
    let everyone = alice.send(&direct, "@all hi").await;
    assert_eq!(everyone["mentions_all"], false);
}

#[tokio::test]
async fn the_feed_holds_mentions_live_and_only_for_their_user() {
    let (alice, bob) = (register("feed_a").await, register("feed_b").await);
    let stranger = register("feed_x").await;
    let conversation = alice.direct_with(&bob).await;
    let mut ws = bob.socket().await;
    let _ = next_event(&mut ws, "hello", WAIT).await;

    let message = alice
        .send(&conversation, &format!("@{} your turn", bob.username))
        .await;
    let id = message["id"].as_str().expect("id");
    // Live: a `notification` event on bob's socket, then the entry in his feed.
    let live = next_event(&mut ws, "notification", WAIT).await;
    assert_eq!(live["data"]["message_id"], id, "{live}");
    assert_eq!(live["data"]["kind"], "mention");
    let entry = feed_entry(&bob, id).await;
    assert_eq!(entry["actor_id"], alice.id.as_str());
    assert_eq!(entry["excerpt"], format!("@{} your turn", bob.username));
    assert!(entry["read_at"].is_null());
    let (_, feed) = bob.get("/api/notifications").await;
    assert_eq!(feed["unread"], 1, "{feed}");
    // Nobody else's feed has it; another user marking it read changes nothing.
    let (_, theirs) = stranger.get("/api/notifications").await;
    assert_eq!(theirs["notifications"], json!([]));
    let entry_id = entry["id"].as_str().expect("id");
    let (s, marked) = alice
        .post("/api/notifications/read", json!({"ids": [entry_id]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{marked}");
    let (_, feed) = bob.get("/api/notifications").await;
    assert_eq!(feed["unread"], 1);
    let (s, marked) = bob
        .post("/api/notifications/read", json!({"ids": [entry_id]}))
        .await;
    assert_eq!((s, marked["unread"].as_i64()), (StatusCode::OK, Some(0)));
    let (s, h, b) = bob
        .call(Method::POST, "/api/notifications/read", Some(json!({})))
        .await;
    assert_problem(s, &h, &b, 422);

    // An edit that adds a mention tells the newly mentioned (once); a delete takes the
    // entry back.
    let plain = bob.send(&conversation, "no mention yet").await;
    let plain_id = plain["id"].as_str().expect("id");
    let (s, _, edited) = bob
        .call(
            Method::PATCH,
            &format!("/api/messages/{plain_id}"),
            Some(json!({"content": format!("now @{}", alice.username)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{edited}");
    assert_eq!(ids(&edited["mentions"]), vec![alice.id.clone()]);
    let _ = feed_entry(&alice, plain_id).await;
    mention_count(&alice, &conversation, 1).await;
    // Edited again, still naming her: still one mention, one entry.
    let (s, _, _) = bob
        .call(
            Method::PATCH,
            &format!("/api/messages/{plain_id}"),
            Some(json!({"content": format!("now @{} again", alice.username)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(600)).await;
    mention_count(&alice, &conversation, 1).await;
    let (s, _, _) = bob
        .call(Method::DELETE, &format!("/api/messages/{plain_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        let (_, feed) = alice.get("/api/notifications").await;
        let gone = !feed["notifications"]
            .as_array()?
            .iter()
            .any(|n| n["message_id"] == plain_id);
        gone.then_some(())
    })
    .await;
    let (s, h, b) = bob
        .call(Method::GET, "/api/notifications?limit=0", None)
        .await;
    assert_problem(s, &h, &b, 400);
}

#[tokio::test]
async fn preferences_belong_to_their_user_and_check_their_input() {
    let (alice, bob) = (register("pref_a").await, register("pref_b").await);
    let stranger = register("pref_x").await;
    let (s, defaults) = alice.get("/api/notification-settings").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            &defaults["direct_level"],
            &defaults["group_level"],
            &defaults["push"]
        ),
        (&json!("all"), &json!("mentions"), &json!(true))
    );
    let mut settings = defaults.clone();
    settings["time_zone"] = json!("Mars/Olympus_Mons");
    let (s, h, b) = alice
        .call(
            Method::PUT,
            "/api/notification-settings",
            Some(settings.clone()),
        )
        .await;
    assert_problem(s, &h, &b, 422);
    assert!(b["errors"]["time_zone"].is_array(), "{b}");
    settings["time_zone"] = json!("Europe/Berlin");
    settings["quiet_hours"] = json!({"start": "22:00:00", "end": "07:00:00"});
    settings["group_level"] = json!("all");
    let (s, _, saved) = alice
        .call(
            Method::PUT,
            "/api/notification-settings",
            Some(settings.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let (_, again) = eventually(WAIT, || async {
        let got = alice.get("/api/notification-settings").await;
        (got.1["time_zone"] == "Europe/Berlin").then_some(got)
    })
    .await;
    assert_eq!(again["group_level"], "all", "{again}");
    assert_eq!(again["quiet_hours"]["start"], "22:00:00");
    // Someone else's defaults are untouched.
    let (_, theirs) = bob.get("/api/notification-settings").await;
    assert_eq!(theirs["time_zone"], "UTC");

    // Per conversation: participants only.
    let conversation = alice.direct_with(&bob).await;
    let path = format!("/api/conversations/{conversation}/notifications");
    let (s, h, b) = stranger
        .call(Method::PUT, &path, Some(json!({"level": "none"})))
        .await;
    assert_problem(s, &h, &b, 404);
    let (s, _, pref) = alice
        .call(
            Method::PUT,
            &path,
            Some(json!({"level": null, "muted_until": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{pref}");
    assert_eq!(
        pref["effective_level"], "all",
        "a direct conversation's default"
    );
    let (s, h, b) = alice
        .call(Method::PUT, &path, Some(json!({"level": "loud"})))
        .await;
    assert!(s.is_client_error(), "{s} {b}");
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
}

/// An outbox row no message matches (the queue has no foreign key since V13; the service
/// never deletes a message row, an operator might) is claimed and dropped without effect,
/// and the worker keeps working: a mention sent after it reaches the feed (in the same pass
/// or a later one; a pass that failed on the row would fail every time and write no entry),
/// and the row is gone (a pass that skipped it would leave it queued).
#[tokio::test]
async fn a_queued_message_that_is_gone_is_dropped_and_the_worker_goes_on() {
    let (alice, bob) = (register("gone_a").await, register("gone_b").await);
    let conversation = alice.direct_with(&bob).await;
    let db = admin(false).await;
    let gone = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO messaging.notify_queue (message_id, conversation_id, seq)
         VALUES ($1, $2::text::uuid, 1)",
        &[&gone, &conversation],
    )
    .await
    .expect("an outbox row for a message that does not exist");

    let message = alice
        .send(
            &conversation,
            &format!("@{} after the gone one", bob.username),
        )
        .await;
    let id = message["id"].as_str().expect("id");
    let entry = feed_entry(&bob, id).await;
    assert_eq!(entry["actor_id"], alice.id.as_str());
    eventually(WAIT, || async {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM messaging.notify_queue WHERE message_id = $1",
                &[&gone],
            )
            .await
            .ok()?
            .get(0);
        (left == 0).then_some(())
    })
    .await;
}
