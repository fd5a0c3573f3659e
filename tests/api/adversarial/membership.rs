//! Memberships at their edges (issue 14, items 2–4): a former member sees the conversation as
//! it was when they left and nothing after; a late joiner sees nothing from before they
//! joined, quotes included; a send racing a removal never lands after it; a removed
//! member's typing reaches nobody.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(5);

async fn group(owner: &User, members: &[&User], name: &str) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let (s, body) = owner
        .post(
            "/api/conversations",
            json!({"participant_ids": ids, "name": name, "is_group": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// A write by `user` answering with its consistency token.
async fn write(user: &User, method: Method, path: &str, body: Value) -> (Value, String) {
    let (s, h, b) = user.call(method, path, Some(body)).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    let token = h
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("consistency token")
        .to_owned();
    (b, token)
}

/// A read by `user` that reflects every write up to `token` (someone else's writes too).
async fn read_at(user: &User, path: &str, token: &str) -> (StatusCode, Value) {
    let (s, _, b) = user
        .call_with(Method::GET, path, None, &[("x-consistency-token", token)])
        .await;
    (s, b)
}

#[tokio::test]
async fn a_former_member_sees_the_group_as_it_was_when_they_left() {
    let (alice, bob, carol, dave) = (
        register("fm_a").await,
        register("fm_b").await,
        register("fm_c").await,
        register("fm_d").await,
    );
    let g = group(&alice, &[&bob, &carol], "Before").await;
    let first = alice.send(&g, "first").await;
    let first_seq = first["seq"].as_i64().expect("seq");
    bob.post(
        &format!("/api/conversations/{g}/read"),
        json!({"seq": first_seq}),
    )
    .await;
    let (s, _, _) = alice
        .call(
            Method::DELETE,
            &format!("/api/conversations/{g}/participants/{}", carol.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let removal_seq = first_seq + 1;
    // Everything after the removal: a rename, a new member, a message, a read.
    write(
        &alice,
        Method::PATCH,
        &format!("/api/conversations/{g}"),
        json!({"name": "After"}),
    )
    .await;
    write(
        &alice,
        Method::POST,
        &format!("/api/conversations/{g}/participants"),
        json!({"user_ids": [dave.id]}),
    )
    .await;
    let (later, _) = write(
        &alice,
        Method::POST,
        &format!("/api/conversations/{g}/messages"),
        json!({"content": "later"}),
    )
    .await;
    let (_, token) = write(
        &bob,
        Method::POST,
        &format!("/api/conversations/{g}/read"),
        json!({"seq": later["seq"]}),
    )
    .await;
    let (_, alice_socket) = socket_hello(&alice).await; // alice is online now

    let (s, details) = read_at(&carol, &format!("/api/conversations/{g}"), &token).await;
    assert_eq!(s, StatusCode::OK, "{details}");
    assert_eq!(
        details["name"], "Before",
        "the name after the removal leaked: {details}"
    );
    assert_eq!(details["last_seq"], removal_seq, "{details}");
    let roster: Vec<&str> = details["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| p["user_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        roster,
        [alice.id.as_str(), bob.id.as_str()],
        "roster as of the removal: {details}"
    );
    for p in details["participants"].as_array().expect("participants") {
        assert!(p.get("online").is_none(), "presence leaked: {p}");
        assert!(p["last_seen_at"].is_null(), "presence leaked: {p}");
        assert!(
            p["last_read_seq"].as_i64().unwrap_or(0) <= removal_seq,
            "later read: {p}"
        );
    }
    let (_, list) = read_at(&carol, "/api/conversations", &token).await;
    let entry = list["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == g.as_str())
        .cloned()
        .expect("the group stays in the list");
    assert_eq!(entry["name"], "Before", "{entry}");
    assert_eq!(entry["last_seq"], removal_seq, "{entry}");
    assert_eq!(entry["left"], true, "{entry}");

    let (s, r) = read_at(
        &carol,
        &format!(
            "/api/messages/{}/receipts",
            later["id"].as_str().unwrap_or("")
        ),
        &token,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "receipts of a later message: {r}");
    let (s, r) = read_at(
        &carol,
        &format!(
            "/api/messages/{}/receipts",
            first["id"].as_str().unwrap_or("")
        ),
        &token,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let read_by: Vec<&str> = r["read_by"]
        .as_array()
        .expect("read_by")
        .iter()
        .map(|x| x["user_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(read_by, [bob.id.as_str()], "as of the removal: {r}");
    assert!(
        r["not_read_by"]
            .as_array()
            .expect("not_read_by")
            .iter()
            .all(|x| x["user_id"] != dave.id.as_str()),
        "a later member in receipts: {r}"
    );
    drop(alice_socket);
}

#[tokio::test]
async fn a_leaver_gets_no_event_after_their_departure() {
    let (alice, bob, carol) = (
        register("lv_a").await,
        register("lv_b").await,
        register("lv_c").await,
    );
    let g = group(&alice, &[&bob, &carol], "Leaving").await;
    let (mut ws, _) = socket_hello(&alice).await;
    let (s, _, _) = alice
        .call(Method::POST, &format!("/api/conversations/{g}/leave"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // alice was the only admin: bob is promoted by a second system message she must not get.
    let frames = frames_within(
        &mut ws,
        &[
            "message.created",
            "participant.removed",
            "conversation.updated",
        ],
        Duration::from_millis(1500),
    )
    .await;
    let departure = frames
        .iter()
        .find(|f| f["type"] == "message.created")
        .and_then(|f| f["seq"].as_i64())
        .expect("her own departure arrives");
    for f in &frames {
        assert!(
            f["seq"].as_i64().is_none_or(|s| s <= departure),
            "an event after the departure reached the leaver: {f}"
        );
        assert_ne!(f["type"], "conversation.updated", "{f}");
    }
    let (s, h) = alice.get(&format!("/api/conversations/{g}/messages")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["seq"].as_i64() <= Some(departure)),
        "{h}"
    );
}

#[tokio::test]
async fn a_removed_members_typing_stops_at_once_and_reaches_nobody() {
    let (alice, bob, carol) = (
        register("ty_a").await,
        register("ty_b").await,
        register("ty_c").await,
    );
    let g = group(&alice, &[&bob, &carol], "Typing").await;
    let (mut bob_ws, _) = socket_hello(&bob).await;
    let (mut carol_ws, _) = socket_hello(&carol).await;
    send_frame(
        &mut bob_ws,
        json!({"type": "typing", "conversation_id": g, "is_typing": true}),
    )
    .await;
    let t = next_event_of(&mut carol_ws, "typing", &bob.id, WAIT).await;
    assert_eq!(t["data"]["is_typing"], true);
    let conversation = g.clone();
    let typist = tokio::spawn(async move {
        // Bob keeps typing through his removal, as a client that ignores it would.
        for _ in 0..14 {
            send_frame(
                &mut bob_ws,
                json!({"type": "typing", "conversation_id": g, "is_typing": true}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bob_ws
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, _) = alice
        .call(
            Method::DELETE,
            &format!("/api/conversations/{conversation}/participants/{}", bob.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The removal's own events, then: bob's typing stops (false) and never starts again.
    let frames = frames_within(&mut carol_ws, &["typing"], Duration::from_millis(3500)).await;
    let from_bob: Vec<&Value> = frames
        .iter()
        .filter(|f| f["data"]["user_id"] == bob.id.as_str())
        .collect();
    let stop = from_bob
        .iter()
        .position(|f| f["data"]["is_typing"] == false);
    let Some(stop) = stop else {
        panic!("the removal did not stop the removed member's typing: {from_bob:?}");
    };
    assert!(
        from_bob[stop..]
            .iter()
            .all(|f| f["data"]["is_typing"] == false),
        "a removed member's typing still reaches the members: {from_bob:?}"
    );
    // Bob's own socket was told: his typing frames now answer "conversation not found".
    let mut bob_ws = typist.await.expect("typist");
    send_frame(
        &mut bob_ws,
        json!({"type": "typing", "conversation_id": conversation, "is_typing": true}),
    )
    .await;
    let e = next_event(&mut bob_ws, "error", WAIT).await;
    assert!(e.to_string().contains("not found"), "{e}");
}

/// The quote of `m` if any.
fn quote(m: &Value) -> &Value {
    &m["quote"]
}

#[tokio::test]
async fn a_late_joiner_never_sees_quotes_of_what_came_before() {
    let (alice, bob, carol) = (
        register("lj_a").await,
        register("lj_b").await,
        register("lj_c").await,
    );
    let g = group(&alice, &[&bob], "Late").await;
    let secret = bob.send(&g, "the secret plan is zebra").await;
    let (mut carol_ws, _) = socket_hello(&carol).await;
    let (mut bob_ws, _) = socket_hello(&bob).await;
    write(
        &alice,
        Method::POST,
        &format!("/api/conversations/{g}/participants"),
        json!({"user_ids": [carol.id]}),
    )
    .await;
    let (reply, _) = write(
        &alice,
        Method::POST,
        &format!("/api/conversations/{g}/messages"),
        json!({"content": "agreed kangaroo", "reply_to": secret["id"]}),
    )
    .await;
    assert!(
        quote(&reply)["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains("zebra")),
        "{reply}"
    );
    let (edited, token) = write(
        &alice,
        Method::PATCH,
        &format!("/api/messages/{}", reply["id"].as_str().unwrap_or("")),
        json!({"content": "agreed kangaroo!"}),
    )
    .await;
    assert!(!quote(&edited).is_null(), "{edited}");

    // Live frames: the member who saw the parent gets the quote; the late joiner does not.
    let bob_frame = loop {
        let f = next_event(&mut bob_ws, "message.created", WAIT).await;
        if f["data"]["id"] == reply["id"] {
            break f;
        }
    };
    assert!(!quote(&bob_frame["data"]).is_null(), "{bob_frame}");
    for kind in ["message.created", "message.edited"] {
        let f = loop {
            let f = next_event(&mut carol_ws, kind, WAIT).await;
            if f["data"]["id"] == reply["id"] {
                break f;
            }
        };
        assert!(
            quote(&f["data"]).is_null(),
            "{kind} frame leaked the quote: {f}"
        );
        assert!(!f.to_string().contains("zebra"), "{f}");
    }
    // History, search, the list preview, a single message's receipts, and resume.
    let (_, h) = read_at(&carol, &format!("/api/conversations/{g}/messages"), &token).await;
    let (_, found) = read_at(&carol, "/api/search?q=kangaroo", &token).await;
    let (_, list) = read_at(&carol, "/api/conversations", &token).await;
    for (what, body) in [("history", &h), ("search", &found), ("list", &list)] {
        assert!(
            !body.to_string().contains("zebra"),
            "{what} leaked the quote: {body}"
        );
    }
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let (s, _) = read_at(
        &carol,
        &format!(
            "/api/messages/{}/receipts",
            secret["id"].as_str().unwrap_or("")
        ),
        &token,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    send_frame(
        &mut carol_ws,
        json!({"type": "resume", "cursors": {g.clone(): 0}}),
    )
    .await;
    let mut replayed = Vec::new();
    loop {
        let f = next_frame(&mut carol_ws).await;
        if f["type"] == "resumed" {
            break;
        }
        replayed.push(f);
    }
    assert!(!replayed.is_empty());
    assert!(
        !Value::from(replayed.clone()).to_string().contains("zebra"),
        "resume leaked: {replayed:?}"
    );
    // Bob, who saw the parent, still reads the quote.
    let (_, bh) = read_at(&bob, &format!("/api/conversations/{g}/messages"), &token).await;
    assert!(bh.to_string().contains("zebra"), "{bh}");
}

#[tokio::test]
async fn a_send_racing_its_senders_removal_never_lands_after_it() {
    for round in 0..4 {
        let (alice, bob) = (register("race_a").await, register("race_b").await);
        let g = group(&alice, &[&bob], "Race").await;
        let sender = {
            let (bob, g) = (bob.clone(), g.clone());
            tokio::spawn(async move {
                let sends = (0..24).map(|i| {
                    let (bob, g) = (bob.clone(), g.clone());
                    async move {
                        tokio::time::sleep(Duration::from_millis(i * 4)).await;
                        bob.call(
                            Method::POST,
                            &format!("/api/conversations/{g}/messages"),
                            Some(json!({"content": format!("race {i}")})),
                        )
                        .await
                        .0
                    }
                });
                futures_util::future::join_all(sends).await
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (s, _, _) = alice
            .call(
                Method::DELETE,
                &format!("/api/conversations/{g}/participants/{}", bob.id),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let statuses = sender.await.expect("sender");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::CREATED || *s == StatusCode::NOT_FOUND),
            "round {round}: {statuses:?}"
        );
        // In alice's history, nothing of bob's comes after the system message removing him.
        let (_, h) = alice
            .get(&format!("/api/conversations/{g}/messages?limit=100"))
            .await;
        let messages = h["messages"].as_array().expect("messages");
        let removal = messages
            .iter()
            .find(|m| m["kind"] == "system" && m["system"]["action"] == "participant.removed")
            .and_then(|m| m["seq"].as_i64())
            .expect("removal");
        let late: Vec<&Value> = messages
            .iter()
            .filter(|m| m["sender_id"] == bob.id.as_str() && m["seq"].as_i64() > Some(removal))
            .collect();
        assert!(
            late.is_empty(),
            "round {round}: sends landed after the removal: {late:?}"
        );
    }
}
