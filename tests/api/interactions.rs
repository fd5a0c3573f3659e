//! What people do with messages (issue 20), through NGINX and across both messaging
//! instances: reactions, pins, edit history, marking unread, blocking — each tried by the
//! people who must not get it (strangers, former members, late joiners, the blocked).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);

/// Percent-encodes a path segment (an emoji) byte by byte (RFC 3986 §2.1).
fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn react(user: &User, message: &str, emoji: &str, on: bool) -> (StatusCode, Value) {
    let method = if on { Method::PUT } else { Method::DELETE };
    let (s, _, b) = user
        .call(
            method,
            &format!("/api/messages/{message}/reactions/{}", pct(emoji)),
            None,
        )
        .await;
    (s, b)
}

/// The reaction entry for `emoji` in a message JSON.
fn reaction<'a>(message: &'a Value, emoji: &str) -> Option<&'a Value> {
    message["reactions"]
        .as_array()?
        .iter()
        .find(|r| r["emoji"] == emoji)
}

/// The two messaging instances' names (the suite runs two).
fn two_instances() -> (String, String) {
    let names: Vec<String> = instances().into_iter().map(|(n, _)| n).collect();
    assert!(names.len() >= 2, "the suite runs two messaging instances");
    (names[0].clone(), names[1].clone())
}

#[tokio::test]
async fn reactions_count_once_per_user_reach_both_instances_and_replay_on_resume() {
    let (alice, bob, carol) = (
        register("rx_a").await,
        register("rx_b").await,
        register("rx_c").await,
    );
    let stranger = register("rx_x").await;
    let group = alice.group(&[&bob], "Reactions").await;
    let first = alice.send(&group, "react to me").await;
    let id = first["id"].as_str().expect("id");
    let (one, two) = two_instances();
    let mut alice_ws = socket_on(&alice, &one).await;
    let mut bob_ws = socket_on(&bob, &two).await;

    let (s, m) = react(&bob, id, "👍", true).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(reaction(&m, "👍").expect("👍")["count"], 1);
    assert_eq!(reaction(&m, "👍").expect("👍")["me"], true);
    // A retry changes nothing and announces nothing.
    let (s, m) = react(&bob, id, "👍", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(reaction(&m, "👍").expect("👍")["count"], 1);
    let (s, m) = react(&alice, id, "👍", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(reaction(&m, "👍").expect("👍")["count"], 2);
    for ws in [&mut alice_ws, &mut bob_ws] {
        let first = next_event(ws, "reaction.added", WAIT).await;
        assert_eq!(first["data"]["user_id"], bob.id.as_str());
        assert_eq!(first["data"]["count"], 1);
        let second = next_event(ws, "reaction.added", WAIT).await;
        assert_eq!(second["data"]["user_id"], alice.id.as_str());
        assert_eq!(second["data"]["count"], 2);
        assert!(second["rev"].as_i64() > first["rev"].as_i64(), "{second}");
        assert_eq!(second["seq"], first_seq(&first));
    }
    // Each reader's `me` in history; the counts are shared.
    eventually(WAIT, || async {
        let (_, page) = alice
            .get(&format!("/api/conversations/{group}/messages"))
            .await;
        let m = page["messages"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == id)?
            .clone();
        (reaction(&m, "👍")?["count"] == 2 && reaction(&m, "👍")?["me"] == true).then_some(())
    })
    .await;

    // Strangers and bad emoji.
    let (s, _) = react(&stranger, id, "👍", true).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in ["x", "👍👍", ":+1:"] {
        let (s, b) = react(&bob, id, bad, true).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
    }

    // A bounded set of distinct emoji.
    let many = [
        "😀", "😃", "😄", "😁", "😆", "😅", "😂", "🤣", "😊", "😇", "🙂", "🙃", "😉", "😌", "😍",
        "🥰", "😘", "😗", "😙",
    ];
    for e in many {
        let (s, b) = react(&bob, id, e, true).await;
        assert_eq!(s, StatusCode::OK, "{e}: {b}");
    }
    let (s, b) = react(&bob, id, "🎉", true).await;
    assert_eq!(s, StatusCode::CONFLICT, "a 21st emoji: {b}");
    // One already there is still fine for someone else.
    let (s, _) = react(&alice, id, "😀", true).await;
    assert_eq!(s, StatusCode::OK);

    // Taking one back: once.
    let (s, m) = react(&bob, id, "👍", false).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(reaction(&m, "👍").expect("👍")["count"], 1);
    assert_eq!(reaction(&m, "👍").expect("👍")["me"], false);
    let (s, m) = react(&bob, id, "👍", false).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(reaction(&m, "👍").expect("👍")["count"], 1);
    let removed = next_event(&mut alice_ws, "reaction.removed", WAIT).await;
    assert_eq!(removed["data"]["count"], 1);

    // A late joiner does not see (or react to) what came before them.
    let (s, _) = alice
        .post(
            &format!("/api/conversations/{group}/participants"),
            json!({"user_ids": [carol.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = react(&carol, id, "👍", true).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A former member can no longer react.
    let (s, _) = bob
        .post(&format!("/api/conversations/{group}/leave"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = react(&bob, id, "🎉", true).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // … nor sees what others do with it now (reactions change after they left).
    let (_, page) = bob
        .get(&format!("/api/conversations/{group}/messages?after=0"))
        .await;
    let seen = page["messages"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id).cloned())
        .expect("still in Bob's history");
    assert_eq!(seen["reactions"], json!([]), "{seen}");

    // Resume from before the reactions: the message comes back with its counts and `me`.
    let mut ws = alice.socket().await;
    next_event(&mut ws, "hello", WAIT).await;
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {group.clone(): first_seq(&first)}}),
    )
    .await;
    let replay = next_event(&mut ws, "message.edited", WAIT).await;
    assert_eq!(replay["data"]["id"], id);
    assert_eq!(reaction(&replay["data"], "😀").expect("😀")["count"], 2);
    assert_eq!(reaction(&replay["data"], "😀").expect("😀")["me"], true);
    assert_eq!(reaction(&replay["data"], "👍").expect("👍")["me"], true);

    // Deleting the message takes its reactions with it.
    let (s, _, _) = alice
        .call(Method::DELETE, &format!("/api/messages/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = react(&alice, id, "👍", true).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let db = admin(false).await;
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM messaging.reactions WHERE message_id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
}

async fn pin(
    user: &User,
    message: &str,
    on: bool,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let method = if on { Method::PUT } else { Method::DELETE };
    user.call(method, &format!("/api/messages/{message}/pin"), None)
        .await
}

fn first_seq(v: &Value) -> i64 {
    v["seq"]
        .as_i64()
        .or_else(|| v["data"]["seq"].as_i64())
        .expect("seq")
}

#[tokio::test]
async fn pins_are_for_admins_in_groups_and_either_person_in_a_direct_conversation() {
    let (alice, bob) = (register("pin_a").await, register("pin_b").await);
    let stranger = register("pin_x").await;
    let group = alice.group(&[&bob], "Pins").await;
    let m = alice.send(&group, "pin me").await;
    let id = m["id"].as_str().expect("id");
    let mut bob_ws = bob.socket().await;
    next_event(&mut bob_ws, "hello", WAIT).await;

    let (s, _, _) = pin(&bob, id, true).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a member pins in a group");
    let (s, _, _) = pin(&stranger, id, true).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, body) = pin(&alice, id, true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["pinned"]["by"], alice.id.as_str());
    let (s, _, _) = pin(&alice, id, true).await;
    assert_eq!(s, StatusCode::OK, "pinning again");
    let event = next_event(&mut bob_ws, "message.pinned", WAIT).await;
    assert_eq!(event["data"]["id"], id);

    let pins = eventually(WAIT, || async {
        let (s, b) = bob.get(&format!("/api/conversations/{group}/pins")).await;
        (s == StatusCode::OK && b["messages"].as_array()?.len() == 1).then_some(b)
    })
    .await;
    assert_eq!(pins["messages"][0]["id"], id);
    let (s, _) = stranger
        .get(&format!("/api/conversations/{group}/pins"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A direct conversation: either of the two.
    let direct = alice.direct_with(&bob).await;
    let d = alice.send(&direct, "ours").await;
    let (s, _, body) = bob
        .call(
            Method::PUT,
            &format!("/api/messages/{}/pin", d["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, _, _) = pin(&alice, id, false).await;
    assert_eq!(s, StatusCode::OK);
    next_event(&mut bob_ws, "message.unpinned", WAIT).await;

    // A former member gets no pins.
    let (s, _) = bob
        .post(&format!("/api/conversations/{group}/leave"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = bob.get(&format!("/api/conversations/{group}/pins")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn earlier_versions_are_kept_for_those_who_see_the_message_and_go_with_it() {
    let (alice, bob, carol) = (
        register("ver_a").await,
        register("ver_b").await,
        register("ver_c").await,
    );
    let group = alice.group(&[&bob], "Versions").await;
    let m = alice.send(&group, "first").await;
    let id = m["id"].as_str().expect("id");
    for text in ["second", "third"] {
        let (s, _, b) = alice
            .call(
                Method::PATCH,
                &format!("/api/messages/{id}"),
                Some(json!({"content": text})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, v) = bob.get(&format!("/api/messages/{id}/versions")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let texts: Vec<&str> = v["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|x| x["content"].as_str().expect("content"))
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(v["versions"][0]["version"], 1);

    // A late joiner and a stranger: as if it did not exist.
    let (s, _) = alice
        .post(
            &format!("/api/conversations/{group}/participants"),
            json!({"user_ids": [carol.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = carol.get(&format!("/api/messages/{id}/versions")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, _, _) = alice
        .call(Method::DELETE, &format!("/api/messages/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = bob.get(&format!("/api/messages/{id}/versions")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["versions"], json!([]), "versions outlived the delete");
}

#[tokio::test]
async fn marking_unread_counts_again_without_moving_the_read_marker_back() {
    let (alice, bob) = (register("unr_a").await, register("unr_b").await);
    let stranger = register("unr_x").await;
    let direct = alice.direct_with(&bob).await;
    for i in 1..=3 {
        alice.send(&direct, &format!("m{i}")).await;
    }
    let (s, marker) = bob
        .post(
            &format!("/api/conversations/{direct}/read"),
            json!({"seq": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{marker}");
    let mut other_device = bob.socket().await;
    next_event(&mut other_device, "hello", WAIT).await;

    let (s, marker) = bob
        .post(
            &format!("/api/conversations/{direct}/unread"),
            json!({"seq": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{marker}");
    assert_eq!(marker["last_read_seq"], 3);
    assert_eq!(marker["unread_from_seq"], 2);
    assert_eq!(marker["unread_count"], 2);
    let event = next_event(&mut other_device, "conversation.unread", WAIT).await;
    assert_eq!(event["data"]["unread_from_seq"], 2);
    eventually(WAIT, || async {
        let (_, list) = bob.get("/api/conversations").await;
        let c = list["conversations"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == direct.as_str())?
            .clone();
        (c["unread_count"] == 2 && c["last_read_seq"] == 3).then_some(())
    })
    .await;
    // The sender's receipts still say read.
    let (_, conv) = alice.get(&format!("/api/conversations/{direct}")).await;
    let bob_marker = conv["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["user_id"] == bob.id.as_str())
        .expect("bob")["last_read_seq"]
        .clone();
    assert_eq!(bob_marker, 3);

    for bad in [0, 4, -1] {
        let (s, b) = bob
            .post(
                &format!("/api/conversations/{direct}/unread"),
                json!({"seq": bad}),
            )
            .await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{bad}: {s} {b}"
        );
    }
    let (s, _) = stranger
        .post(
            &format!("/api/conversations/{direct}/unread"),
            json!({"seq": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Reading it again clears the mark.
    let (s, marker) = bob
        .post(
            &format!("/api/conversations/{direct}/read"),
            json!({"seq": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(marker["unread_from_seq"], Value::Null);
    assert_eq!(marker["unread_count"], 0);
}

#[tokio::test]
async fn a_block_closes_the_direct_conversation_both_ways_and_hides_presence_and_typing() {
    let (alice, bob, carol) = (
        register("blk_a").await,
        register("blk_b").await,
        register("blk_c").await,
    );
    let direct = alice.direct_with(&bob).await;
    let hello = alice.send(&direct, "hi bob").await;
    let group = carol.group(&[&alice, &bob], "Blocks").await;

    // Bob blocks Alice.
    let (s, _, blocks) = bob
        .call(Method::PUT, &format!("/api/blocks/{}", alice.id), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{blocks}");
    assert_eq!(blocks["blocks"][0]["user_id"], alice.id.as_str());
    let (s, _, again) = bob
        .call(Method::PUT, &format!("/api/blocks/{}", alice.id), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["blocks"].as_array().map(Vec::len), Some(1));

    // Read-only both ways: sends, edits, reactions, pins, files.
    for (who, text) in [(&alice, "let me in"), (&bob, "nor me")] {
        let (s, _, b) = who
            .call(
                Method::POST,
                &format!("/api/conversations/{direct}/messages"),
                Some(json!({"content": text})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    }
    let hid = hello["id"].as_str().expect("id");
    let (s, _, _) = alice
        .call(
            Method::PATCH,
            &format!("/api/messages/{hid}"),
            Some(json!({"content": "edited"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = react(&bob, hid, "👍", true).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = alice
        .call(Method::PUT, &format!("/api/messages/{hid}/pin"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Asking for the direct conversation again shows Alice no presence of Bob's.
    let (s, again) = alice
        .post("/api/conversations", json!({"participant_ids": [bob.id]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let bob_row = again["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["user_id"] == bob.id.as_str()).cloned())
        .expect("bob");
    assert!(bob_row.get("online").is_none(), "{bob_row}");
    // History stays readable; the conversation says it is read-only.
    let (s, conv) = alice.get(&format!("/api/conversations/{direct}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(conv["blocked"], true);

    // No new direct conversation, no adding Bob to a group — by Alice.
    let dave = register("blk_d").await;
    let (s, _, _) = dave
        .call(Method::PUT, &format!("/api/blocks/{}", alice.id), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = alice
        .post("/api/conversations", json!({"participant_ids": [dave.id]}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = alice
        .post(
            "/api/conversations",
            json!({"participant_ids": [bob.id, carol.id], "name": "sneaky"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let other = alice.group(&[&carol], "Other").await;
    let (s, b) = alice
        .post(
            &format!("/api/conversations/{other}/participants"),
            json!({"user_ids": [bob.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // Bob may still add Alice (his choice).
    let mine = bob.group(&[&carol], "Bob's").await;
    let (s, _) = bob
        .post(
            &format!("/api/conversations/{mine}/participants"),
            json!({"user_ids": [alice.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Typing in the shared group: Carol sees Bob's, Alice does not.
    let mut alice_ws = alice.socket().await;
    next_event(&mut alice_ws, "hello", WAIT).await;
    let mut carol_ws = carol.socket().await;
    next_event(&mut carol_ws, "hello", WAIT).await;
    let mut bob_ws = bob.socket().await;
    next_event(&mut bob_ws, "hello", WAIT).await;
    send_frame(
        &mut bob_ws,
        json!({"type": "typing", "conversation_id": group, "is_typing": true}),
    )
    .await;
    let t = next_event_of(&mut carol_ws, "typing", &bob.id, WAIT).await;
    assert_eq!(t["data"]["is_typing"], true);
    let seen = frames_within(
        &mut alice_ws,
        &["typing", "presence"],
        Duration::from_secs(2),
    )
    .await;
    assert!(
        seen.iter().all(|f| f["data"]["user_id"] != bob.id.as_str()),
        "Alice saw Bob: {seen:?}"
    );
    // Typing in the blocked direct conversation is refused.
    send_frame(
        &mut alice_ws,
        json!({"type": "typing", "conversation_id": direct, "is_typing": true}),
    )
    .await;
    let err = next_event(&mut alice_ws, "error", WAIT).await;
    assert!(
        err["data"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("read-only"),
        "{err}"
    );
    // Bob's presence is hidden from Alice in the group's details, not from Carol.
    let bob_there = |g: &Value| {
        g["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["user_id"] == bob.id.as_str()))
            .map(|p| p["online"].clone())
            .unwrap_or(Value::Null)
    };
    eventually(WAIT, || async {
        let (_, g) = carol.get(&format!("/api/conversations/{group}")).await;
        (bob_there(&g) == true).then_some(())
    })
    .await;
    let (_, g) = alice.get(&format!("/api/conversations/{group}")).await;
    assert_eq!(
        bob_there(&g),
        Value::Null,
        "no presence of Bob's for Alice: {g}"
    );

    // Undo: writable again, announced to both.
    let (s, _, blocks) = bob
        .call(Method::DELETE, &format!("/api/blocks/{}", alice.id), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(blocks["blocks"], json!([]));
    let updated = next_event(&mut alice_ws, "conversation.updated", WAIT).await;
    assert_eq!(updated["data"]["conversation"]["blocked"], false);
    alice.send(&direct, "thanks").await;

    // Nonsense.
    let (s, _, _) = bob
        .call(Method::PUT, &format!("/api/blocks/{}", bob.id), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = bob
        .call(
            Method::PUT,
            &format!("/api/blocks/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The pushes the push service received for subscription `id` within `window` (none refused).
async fn pushes_after(id: &str, window: Duration) -> Vec<Value> {
    tokio::time::sleep(window).await;
    let s = seen(id).await;
    assert_eq!(s["refused"], json!([]), "the push service refused: {s}");
    s["received"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_urgent_message_pushes_through_a_mute_but_nothing_comes_from_someone_blocked() {
    let (alice, bob, carol) = (
        register("prio_a").await,
        register("prio_b").await,
        register("prio_c").await,
    );
    let group = alice.group(&[&bob, &carol], "Priority").await;
    let (browser, subscription) = browser_subscription().await;
    let (s, b) = bob.post("/api/push/subscriptions", subscription).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    bob.mute(&group, true).await;

    let send = |who: &User, text: &str, priority: &str| {
        let body = json!({"content": text, "priority": priority});
        let path = format!("/api/conversations/{group}/messages");
        let who = who.clone();
        async move { who.post(&path, body).await }
    };
    // Shown as sent; nonsense refused.
    let (s, m) = send(&alice, "fyi", "important").await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["priority"], "important");
    let (s, _) = send(&alice, "??", "shouting").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Muted: an important message does not push, an urgent one does.
    let (s, urgent) = send(&alice, "the build is on fire", "urgent").await;
    assert_eq!(s, StatusCode::CREATED);
    let got = eventually(WAIT, || async {
        let s = seen(&browser).await;
        let got = s["received"].as_array()?.clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"]["message_id"], urgent["id"]);

    // Bob blocks Carol: not even her urgent mention reaches him.
    let (s, _, _) = bob
        .call(Method::PUT, &format!("/api/blocks/{}", carol.id), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(&carol, &format!("@{} urgent!!", bob.username), "urgent").await;
    assert_eq!(s, StatusCode::CREATED);
    let after = pushes_after(&browser, Duration::from_millis(1500)).await;
    assert_eq!(after.len(), 1, "a push from a blocked sender: {after:?}");
    let (_, feed) = bob.get("/api/notifications").await;
    assert_eq!(
        feed["notifications"],
        json!([]),
        "a feed entry from a blocked sender"
    );
}

#[tokio::test]
async fn the_sender_sees_sent_then_delivered_then_read_with_times_per_member() {
    let (alice, bob, carol) = (
        register("dlv_a").await,
        register("dlv_b").await,
        register("dlv_c").await,
    );
    let stranger = register("dlv_x").await;
    let group = alice.group(&[&bob, &carol], "Ticks").await;
    let mut alice_ws = alice.socket().await;
    next_event(&mut alice_ws, "hello", WAIT).await;
    let m = alice.send(&group, "did you get this?").await;
    let (id, seq) = (
        m["id"].as_str().expect("id"),
        m["seq"].as_i64().expect("seq"),
    );
    let state_of = |r: &Value, u: &User| {
        r["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|x| x["user_id"] == u.id.as_str()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let receipts = || async {
        let (s, r) = alice.get(&format!("/api/messages/{id}/receipts")).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        r
    };
    let r = receipts().await;
    assert_eq!(state_of(&r, &bob)["state"], "sent", "{r}");

    // Bob's device acknowledges over the socket: delivered, with a time, announced.
    let mut bob_ws = bob.socket().await;
    next_event(&mut bob_ws, "hello", WAIT).await;
    send_frame(
        &mut bob_ws,
        json!({"type": "delivered", "conversation_id": group, "seq": seq}),
    )
    .await;
    let moved = next_event_of(&mut alice_ws, "delivered", &bob.id, WAIT).await;
    assert_eq!(moved["data"]["last_delivered_seq"], seq);
    let r = eventually(WAIT, || async {
        let r = receipts().await;
        (state_of(&r, &bob)["state"] == "delivered").then_some(r)
    })
    .await;
    assert!(state_of(&r, &bob)["delivered_at"].is_string(), "{r}");
    assert_eq!(state_of(&r, &bob)["read_at"], Value::Null);
    // Carol fetches the history: that is delivery too.
    eventually(WAIT, || async {
        let (_, page) = carol
            .get(&format!("/api/conversations/{group}/messages"))
            .await;
        page["messages"]
            .as_array()?
            .iter()
            .any(|x| x["id"] == id)
            .then_some(())
    })
    .await;
    eventually(WAIT, || async {
        let r = receipts().await;
        (state_of(&r, &carol)["state"] == "delivered").then_some(())
    })
    .await;
    // Bob reads it.
    let (s, _) = bob
        .post(
            &format!("/api/conversations/{group}/read"),
            json!({"seq": seq}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = eventually(WAIT, || async {
        let r = receipts().await;
        (state_of(&r, &bob)["state"] == "read").then_some(r)
    })
    .await;
    let (d, rd) = (
        state_of(&r, &bob)["delivered_at"]
            .as_str()
            .map(str::to_owned),
        state_of(&r, &bob)["read_at"].as_str().map(str::to_owned),
    );
    assert!(d.is_some() && rd.is_some() && d <= rd, "{r}");
    assert_eq!(r["read_by"].as_array().map(Vec::len), Some(1));

    // Nobody acknowledges for a conversation they are not in.
    let mut x_ws = stranger.socket().await;
    next_event(&mut x_ws, "hello", WAIT).await;
    send_frame(
        &mut x_ws,
        json!({"type": "delivered", "conversation_id": group, "seq": seq}),
    )
    .await;
    let err = next_event(&mut x_ws, "error", WAIT).await;
    assert_eq!(err["data"]["detail"], "conversation not found");
    let (s, _) = stranger.get(&format!("/api/messages/{id}/receipts")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forwarding_copies_what_you_can_see_with_provenance_and_shares_the_file() {
    let (alice, bob, carol) = (
        register("fwd_a").await,
        register("fwd_b").await,
        register("fwd_c").await,
    );
    let stranger = register("fwd_x").await;
    let source = alice.group(&[&bob], "Source").await;
    let original = alice.send(&source, "worth sharing").await;
    let oid = original["id"].as_str().expect("id");
    // A file, forwarded by reference.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello file".to_vec()).file_name("note.txt"),
    );
    let (s, _, file) = upload_form(
        &alice,
        &format!("/api/conversations/{source}/attachments"),
        form,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{file}");
    let fid = file["id"].as_str().expect("id");
    let attachment = file["attachment"]["id"]
        .as_str()
        .expect("attachment")
        .to_owned();

    // Bob forwards to Carol (who is not in the source): no source conversation in the copy.
    let to_carol = bob.direct_with(&carol).await;
    let forward = |who: &User, message: &str, to: &str, client: &str| {
        let path = format!("/api/messages/{message}/forward");
        let body = json!({"conversation_id": to, "client_id": client});
        let who = who.clone();
        async move { who.post(&path, body).await }
    };
    let (s, copy) = forward(&bob, oid, &to_carol, "fw-1").await;
    assert_eq!(s, StatusCode::CREATED, "{copy}");
    assert_eq!(copy["content"], "worth sharing");
    assert_eq!(copy["sender_id"], bob.id.as_str());
    assert_eq!(copy["forwarded_from"]["sender_id"], alice.id.as_str());
    assert_eq!(copy["forwarded_from"]["message_id"], oid);
    assert_eq!(copy["forwarded_from"]["created_at"], original["created_at"]);
    assert!(
        copy["forwarded_from"].get("conversation_id").is_none(),
        "{copy}"
    );
    // A retry: the same copy.
    let (s, again) = forward(&bob, oid, &to_carol, "fw-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["id"], copy["id"]);
    // Bob forwards to a conversation whose people all see the source: it is named.
    let (s, own) = forward(&bob, oid, &source, "fw-2").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(own["forwarded_from"]["conversation_id"], source.as_str());

    // The file: Carol can fetch it through her copy, the stranger cannot.
    let (s, fcopy) = forward(&bob, fid, &to_carol, "fw-3").await;
    assert_eq!(s, StatusCode::CREATED, "{fcopy}");
    assert_eq!(fcopy["attachment"]["id"], attachment.as_str());
    let get_file = |who: &User| {
        let url = format!("{}/api/attachments/{attachment}", base());
        let token = who.access.clone();
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("download")
                .status()
        }
    };
    assert_eq!(get_file(&carol).await, StatusCode::OK);
    assert_eq!(get_file(&stranger).await, StatusCode::NOT_FOUND);
    // Deleting the original keeps the copy's file.
    let (s, _, _) = alice
        .call(Method::DELETE, &format!("/api/messages/{fid}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(get_file(&carol).await, StatusCode::OK);
    assert_eq!(
        get_file(&bob).await,
        StatusCode::OK,
        "Bob has the copy he sent"
    );

    // What cannot be forwarded, and by whom.
    let (s, _) = forward(&stranger, oid, &to_carol, "fw-x").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a stranger forwards what they cannot see"
    );
    let (s, _) = forward(&carol, oid, &to_carol, "fw-y").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "Carol never saw the original");
    let elsewhere = stranger.direct_with(&carol).await;
    let (s, _) = forward(&bob, oid, &elsewhere, "fw-z").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "into a conversation Bob is not in"
    );
    let (s, _) = forward(&bob, fid, &to_carol, "fw-4").await;
    assert_eq!(s, StatusCode::CONFLICT, "a deleted message");
}

#[tokio::test]
async fn threads_keep_their_replies_apart_with_their_own_read_markers() {
    let (alice, bob, carol, dave) = (
        register("thr_a").await,
        register("thr_b").await,
        register("thr_c").await,
        register("thr_d").await,
    );
    let stranger = register("thr_x").await;
    let group = alice.group(&[&bob, &carol], "Threads").await;
    let root = alice.send(&group, "thoughts on the launch?").await;
    let rid = root["id"].as_str().expect("id");
    let mut alice_ws = alice.socket().await;
    next_event(&mut alice_ws, "hello", WAIT).await;

    let reply = |who: &User, text: &str, to: &str| {
        let path = format!("/api/conversations/{group}/messages");
        let body = json!({"content": text, "thread_root_id": to});
        let who = who.clone();
        async move { who.post(&path, body).await }
    };
    let (s, first) = reply(&bob, "ship it", rid).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["thread_root_id"], rid);
    // Naming a reply continues its thread.
    let (s, second) = reply(&carol, "agreed", first["id"].as_str().expect("id")).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    assert_eq!(second["thread_root_id"], rid);
    let created = next_event(&mut alice_ws, "message.created", WAIT).await;
    assert_eq!(created["data"]["thread_root_id"], rid);
    let mut updated = next_event(&mut alice_ws, "thread.updated", WAIT).await;
    if updated["data"]["reply_count"] == 1 {
        updated = next_event(&mut alice_ws, "thread.updated", WAIT).await;
    }
    assert_eq!(updated["data"]["root_id"], rid);
    assert_eq!(updated["data"]["reply_count"], 2);
    assert_eq!(
        updated["data"]["participants"],
        json!([alice.id, bob.id, carol.id])
    );

    // The main history leaves the replies out; the root carries the summary.
    let page = eventually(WAIT, || async {
        let (_, page) = alice
            .get(&format!("/api/conversations/{group}/messages"))
            .await;
        let root = page["messages"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == rid)?
            .clone();
        (root["thread"]["reply_count"] == 2).then_some(page)
    })
    .await;
    assert!(
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["thread_root_id"].is_null()),
        "{page}"
    );
    // The thread: oldest first; two unread for Alice, who wrote the root.
    let (s, thread) = alice.get(&format!("/api/messages/{rid}/thread")).await;
    assert_eq!(s, StatusCode::OK, "{thread}");
    let texts: Vec<&str> = thread["replies"]
        .as_array()
        .expect("replies")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(texts, ["ship it", "agreed"]);
    assert_eq!(thread["unread_count"], 2);
    // The list counts them apart from the main unread count.
    let summary = |u: &User| {
        let u = u.clone();
        let group = group.clone();
        async move {
            let (_, list) = u.get("/api/conversations").await;
            list["conversations"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["id"] == group.as_str()).cloned())
                .unwrap_or(Value::Null)
        }
    };
    let c = summary(&alice).await;
    assert_eq!(c["thread_unread_count"], 2, "{c}");
    assert_eq!(c["unread_count"], 0, "{c}");
    // Bob follows since he replied: only Carol's reply is unread for him.
    let c = summary(&bob).await;
    assert_eq!(c["thread_unread_count"], 1, "{c}");
    let (s, marker) = alice
        .post(
            &format!("/api/messages/{rid}/thread/read"),
            json!({"seq": second["seq"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{marker}");
    assert_eq!(marker["unread_count"], 0);
    eventually(WAIT, || async {
        (summary(&alice).await["thread_unread_count"] == 0).then_some(())
    })
    .await;

    // A late joiner sees neither the thread nor can reply in it; a stranger gets nothing.
    let (s, _) = alice
        .post(
            &format!("/api/conversations/{group}/participants"),
            json!({"user_ids": [dave.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = dave.get(&format!("/api/messages/{rid}/thread")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = reply(&dave, "late", rid).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // … not even through a reply written after they joined.
    let (s, later) = reply(&carol, "still here", rid).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = reply(&dave, "late", later["id"].as_str().expect("id")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let c = summary(&dave).await;
    assert_eq!(c["thread_unread_count"], 0, "{c}");
    let (s, _) = stranger.get(&format!("/api/messages/{rid}/thread")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = reply(&stranger, "hi", rid).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A root from another conversation, or a system message, is no thread here.
    let other = alice.group(&[&bob], "Other").await;
    let elsewhere = alice.send(&other, "elsewhere").await;
    let (s, _) = reply(&alice, "x", elsewhere["id"].as_str().expect("id")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, page) = alice
        .get(&format!("/api/conversations/{group}/messages?after=0"))
        .await;
    let system = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["kind"] == "system")
        .expect("a system message")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (s, _) = reply(&alice, "x", &system).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Resume replays a thread reply like any message, with its root.
    let mut ws = alice.socket().await;
    next_event(&mut ws, "hello", WAIT).await;
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {group.clone(): root["seq"]}}),
    )
    .await;
    let replayed = next_event(&mut ws, "message.created", WAIT).await;
    assert_eq!(replayed["data"]["thread_root_id"], rid);
}

#[tokio::test]
async fn typing_over_http_hiding_online_contacts_and_search_filters() {
    let (alice, bob, carol) = (
        register("gap_a").await,
        register("gap_b").await,
        register("gap_c").await,
    );
    let stranger = register("gap_x").await;
    let group = alice.group(&[&bob, &carol], "Gapsteam").await;
    let direct = alice.direct_with(&bob).await;

    // Typing over HTTP reaches the others' sockets, as a socket's typing frame does.
    let mut bob_ws = bob.socket().await;
    next_event(&mut bob_ws, "hello", WAIT).await;
    let (s, _, b) = alice
        .call(
            Method::POST,
            &format!("/api/conversations/{group}/typing"),
            Some(json!({"is_typing": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let t = next_event_of(&mut bob_ws, "typing", &alice.id, WAIT).await;
    assert_eq!(t["data"]["is_typing"], true);
    assert!(
        t["data"]["expires_in"].as_f64().is_some_and(|e| e > 0.0),
        "{t}"
    );
    let (s, _, _) = stranger
        .call(
            Method::POST,
            &format!("/api/conversations/{group}/typing"),
            Some(json!({"is_typing": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Online contacts: Bob (socket open) for Alice; not once he blocks her.
    let online = |u: &User| {
        let u = u.clone();
        async move {
            let (s, b) = u.get("/api/contacts/online").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["contacts"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["user_id"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    eventually(WAIT, || async {
        online(&alice).await.contains(&bob.id).then_some(())
    })
    .await;
    assert!(!online(&stranger).await.contains(&bob.id));
    let (s, _, _) = bob
        .call(Method::PUT, &format!("/api/blocks/{}", alice.id), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    eventually(WAIT, || async {
        (!online(&alice).await.contains(&bob.id)).then_some(())
    })
    .await;
    let (s, _, _) = alice
        .call(
            Method::POST,
            &format!("/api/conversations/{direct}/typing"),
            Some(json!({"is_typing": true})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "typing in a read-only conversation"
    );

    // Hiding: out of Alice's list until something new happens there.
    let listed = |u: &User, id: &str| {
        let (u, id) = (u.clone(), id.to_owned());
        async move {
            let (_, list) = u.get("/api/conversations").await;
            list["conversations"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["id"] == id.as_str()))
        }
    };
    let (s, _) = alice
        .post(&format!("/api/conversations/{group}/hide"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        (!listed(&alice, &group).await).then_some(())
    })
    .await;
    assert!(listed(&bob, &group).await, "hidden for Bob too");
    carol.send(&group, "back again").await;
    eventually(WAIT, || async {
        listed(&alice, &group).await.then_some(())
    })
    .await;
    let (s, _) = stranger
        .post(&format!("/api/conversations/{group}/hide"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Search filters.
    carol.send(&group, "launch checklist from carol").await;
    bob.send(&group, "launch checklist from bob").await;
    let search = |q: &str| {
        let q = q.to_owned();
        let alice = alice.clone();
        async move {
            let url = format!(
                "/api/search?q={}",
                q.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
            );
            let (s, b) = alice.get(&url).await;
            (s, b)
        }
    };
    let texts = |b: &Value| -> Vec<String> {
        let mut t: Vec<String> = b["results"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| r["message"]["content"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        t.sort();
        t
    };
    let found = eventually(WAIT, || async {
        let (s, b) = search(&format!("checklist from:{}", carol.username)).await;
        (s == StatusCode::OK && !texts(&b).is_empty()).then_some(b)
    })
    .await;
    assert_eq!(texts(&found), ["launch checklist from carol"]);
    let (_, b) = search("checklist in:gapsteam").await;
    assert_eq!(texts(&b).len(), 2, "a group by its name: {b}");
    let (_, b) = search(&format!("checklist in:@{}", bob.username)).await;
    assert_eq!(
        texts(&b).len(),
        0,
        "the direct conversation has no checklist: {b}"
    );
    let (s, b) = search(&format!("checklist in:{group}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(texts(&b).len(), 2, "{b}");
    let (_, b) = search("checklist before:2000-01-01").await;
    assert_eq!(texts(&b).len(), 0, "{b}");
    let (_, b) = search("checklist after:2000-01-01 has:file").await;
    assert_eq!(texts(&b).len(), 0, "{b}");
    let (s, _) = search("checklist has:image").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = search("before:nonsense").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A stranger filtering by a conversation they are not in finds nothing.
    let (s, b) = stranger
        .get(&format!("/api/search?q=checklist%20in%3A{group}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["results"], json!([]));
}

#[tokio::test]
async fn a_forwarded_file_stops_counting_for_its_uploader_once_they_delete_it() {
    // The test stack keeps 4 MiB stored per user (UPLOAD_QUOTA_TOTAL_BYTES), files of 1 MiB.
    let (erin, bob, carol) = (
        register("quota_e").await,
        register("quota_b").await,
        register("quota_c").await,
    );
    let shared = erin.group(&[&bob], "Files").await;
    let mut files = Vec::new();
    for _ in 0..4 {
        let (s, m, _) = upload_bytes(&erin, &shared, 1_000_000).await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        files.push(m);
    }
    let (s, _, _) = upload_bytes(&erin, &shared, 1_000_000).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "past the stored quota");
    // Bob forwards the first to Carol; Erin deletes hers: the copy keeps the file, Erin's
    // quota has room again.
    let to_carol = bob.direct_with(&carol).await;
    let first = files[0]["id"].as_str().expect("id");
    let (s, copy) = bob
        .post(
            &format!("/api/messages/{first}/forward"),
            json!({"conversation_id": to_carol}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{copy}");
    let (s, _, _) = erin
        .call(Method::DELETE, &format!("/api/messages/{first}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, m, _) = upload_bytes(&erin, &shared, 1_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let attachment = copy["attachment"]["id"].as_str().expect("attachment");
    let res = http()
        .get(format!("{}/api/attachments/{attachment}", base()))
        .bearer_auth(&carol.access)
        .send()
        .await
        .expect("download");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.expect("bytes").len(), 1_000_000);
}

#[tokio::test]
async fn a_group_avatar_is_set_by_admins_and_seen_by_participants_only() {
    const PNG: &[u8] =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let (alice, bob) = (register("gav_a").await, register("gav_b").await);
    let stranger = register("gav_x").await;
    let group = alice.group(&[&bob], "Avatars").await;
    let direct = alice.direct_with(&bob).await;
    let mut bob_ws = bob.socket().await;
    next_event(&mut bob_ws, "hello", WAIT).await;
    let put = |who: &User, conversation: &str, bytes: &'static [u8]| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("a.png"),
        );
        let (who, path) = (
            who.clone(),
            format!("/api/conversations/{conversation}/avatar"),
        );
        async move { upload_form(&who, &path, form).await }
    };
    let (s, _, b) = put(&bob, &group, PNG).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a member: {b}");
    let (s, _, b) = put(&alice, &direct, PNG).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a direct conversation: {b}"
    );
    let (s, _, b) = put(&alice, &group, b"plain text, not an image").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "not an image: {b}");
    let (s, _, conv) = put(&alice, &group, PNG).await;
    assert_eq!(s, StatusCode::OK, "{conv}");
    let avatar = conv["avatar_id"].as_str().expect("avatar_id").to_owned();
    let updated = next_event(&mut bob_ws, "conversation.updated", WAIT).await;
    assert_eq!(
        updated["data"]["conversation"]["avatar_id"],
        avatar.as_str()
    );
    let fetch = |who: &User| {
        let url = format!("{}/api/conversations/{group}/avatar", base());
        let token = who.access.clone();
        async move {
            let res = http()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            (res.status(), res.bytes().await.expect("bytes").to_vec())
        }
    };
    let (s, bytes) = eventually(WAIT, || async {
        let got = fetch(&bob).await;
        (got.0 == StatusCode::OK).then_some(got)
    })
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bytes, PNG);
    assert_eq!(fetch(&stranger).await.0, StatusCode::NOT_FOUND);
    let (s, _, conv) = alice
        .call(
            Method::DELETE,
            &format!("/api/conversations/{group}/avatar"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(conv.get("avatar_id").is_none(), "{conv}");
    eventually(WAIT, || async {
        (fetch(&bob).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}
