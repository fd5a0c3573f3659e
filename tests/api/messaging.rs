//! Conversations, messages, read markers and live delivery through NGINX on the real
//! primary + replica.

use std::time::Duration;

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// B's view of the conversation list entry, once the replica has it at `last_seq`.
async fn summary_at(user: &User, conversation: &str, last_seq: i64) -> Value {
    eventually(WAIT, || async {
        let (s, body) = user.get("/api/conversations").await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["conversations"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == conversation && c["last_seq"] == last_seq)
            .cloned()
    })
    .await
}

#[tokio::test]
async fn two_users_converse_live_and_unread_counts_follow_the_read_marker() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let conv = alice.direct_with(&bob).await;
    // Asking again for the same pair (from either side) returns the same conversation.
    let (s, again) = bob
        .post("/api/conversations", json!({"participant_ids": [alice.id]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], conv.as_str());

    let mut bob_ws = bob.socket().await;
    let sent = alice.send(&conv, "hello bob").await;
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["kind"], "text");
    assert_eq!(sent["sender_id"], alice.id.as_str());

    let event = next_event(&mut bob_ws, "message.created", WAIT).await;
    assert_eq!(event["conversation_id"], conv.as_str());
    assert_eq!(event["seq"], 1);
    assert_eq!(event["data"]["content"], "hello bob");
    assert_eq!(event["data"]["id"], sent["id"]);

    alice.send(&conv, "second").await;
    let event = next_event(&mut bob_ws, "message.created", WAIT).await;
    assert_eq!(event["seq"], 2);

    // Bob has two unread; Alice none (a sender has read their own messages).
    let entry = summary_at(&bob, &conv, 2).await;
    assert_eq!(entry["unread_count"], 2, "{entry}");
    assert_eq!(entry["last_message"]["content"], "second");
    // A direct conversation names the other person, so a list can title it.
    assert_eq!(entry["peer"]["user_id"], alice.id.as_str(), "{entry}");
    assert_eq!(
        entry["peer"]["username"],
        alice.username.as_str(),
        "{entry}"
    );
    let entry = summary_at(&alice, &conv, 2).await;
    assert_eq!(entry["unread_count"], 0, "{entry}");
    assert_eq!(entry["peer"]["user_id"], bob.id.as_str(), "{entry}");

    // The read marker moves forward only and drives the count.
    let (s, marker) = bob
        .post(
            &format!("/api/conversations/{conv}/read"),
            json!({"seq": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{marker}");
    assert_eq!(marker["unread_count"], 1);
    let (_, marker) = bob
        .post(
            &format!("/api/conversations/{conv}/read"),
            json!({"seq": 0}),
        )
        .await;
    assert_eq!(marker["last_read_seq"], 1, "never moves back");
    let (_, marker) = bob
        .post(
            &format!("/api/conversations/{conv}/read"),
            json!({"seq": 99}),
        )
        .await;
    assert_eq!(marker["last_read_seq"], 2, "never past the last message");
    assert_eq!(marker["unread_count"], 0);

    // Alice's socket learns that Bob read.
    let mut alice_ws = alice.socket().await;
    let (s, _) = bob
        .post(
            &format!("/api/messages/{}/read", sent["id"].as_str().unwrap_or("")),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    alice.send(&conv, "third").await;
    bob.post(
        &format!("/api/conversations/{conv}/read"),
        json!({"seq": 3}),
    )
    .await;
    // An earlier marker move (published just before the socket opened) may still be on its
    // way through NOTIFY; the one for seq 3 must come.
    let read = loop {
        let read = next_event(&mut alice_ws, "read", WAIT).await;
        assert!(read["seq"].as_i64().is_some_and(|s| s <= 3), "{read}");
        if read["seq"] == 3 {
            break read;
        }
    };
    assert_eq!(read["data"]["user_id"], bob.id.as_str());

    // History for Bob, newest first, then paged with before/after.
    let page = eventually(WAIT, || async {
        let (s, body) = bob
            .get(&format!("/api/conversations/{conv}/messages?limit=2"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        (body["messages"][0]["seq"] == 3).then_some(body)
    })
    .await;
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(seqs, vec![3, 2]);
    assert_eq!(page["has_more"], true);
    let (_, older) = bob
        .get(&format!("/api/conversations/{conv}/messages?before=2"))
        .await;
    assert_eq!(older["messages"][0]["content"], "hello bob");
    assert_eq!(older["has_more"], false);
    let (_, newer) = bob
        .get(&format!("/api/conversations/{conv}/messages?after=1"))
        .await;
    let seqs: Vec<i64> = newer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(seqs, vec![2, 3], "after= pages oldest first");
    // A page is encoded straight from its rows (the text borrowed from them, not copied):
    // each message in it is, field for field, what its sender got back when sending it —
    // text that JSON must escape and text beyond ASCII included.
    let tricky = "a \"quote\", a back\\slash, a\nnew line, a tab\t, é, 🎉 and \u{1}";
    let (s, headers, sent) = bob
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": tricky})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    // Read with the send's consistency token, as a browser does: the page holds the send.
    let token = headers
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("consistency token");
    let (_, _, page) = bob
        .call_with(
            Method::GET,
            &format!("/api/conversations/{conv}/messages?limit=1"),
            None,
            &[("x-consistency-token", token)],
        )
        .await;
    assert_eq!(page["messages"][0], sent, "{page}");
    assert_eq!(page["messages"][0]["content"], tricky);
}

#[tokio::test]
async fn groups_deliver_to_every_member_and_seq_is_gapless() {
    let owner = register("owner").await;
    let m1 = register("member1").await;
    let m2 = register("member2").await;
    let (s, conv) = owner
        .post(
            "/api/conversations",
            json!({"participant_ids": [m1.id, m2.id], "name": "Team"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    assert_eq!(conv["is_group"], true);
    assert_eq!(conv["participants"].as_array().map(Vec::len), Some(3));
    let id = conv["id"].as_str().expect("id").to_owned();
    let mut ws1 = m1.socket().await;
    let mut ws2 = m2.socket().await;

    // Concurrent sends from three users: seq comes out 1..=15 with no gap or duplicate.
    let mut tasks = Vec::new();
    for (i, u) in [owner.clone(), m1.clone(), m2.clone()]
        .into_iter()
        .enumerate()
    {
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..5 {
                seqs.push(
                    u.send(&id, &format!("from {i} #{n}")).await["seq"]
                        .as_i64()
                        .expect("seq"),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=15).collect::<Vec<i64>>());
    for ws in [&mut ws1, &mut ws2] {
        let mut got = Vec::new();
        while got.len() < 15 {
            let e = next_event(ws, "message.created", WAIT).await;
            got.push(e["seq"].as_i64().expect("seq"));
        }
        got.sort_unstable();
        assert_eq!(got, (1..=15).collect::<Vec<i64>>());
    }
}

#[tokio::test]
async fn a_non_participant_gets_404_everywhere_and_no_events() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let eve = register("eve").await;
    let conv = alice.direct_with(&bob).await;
    let first = alice.send(&conv, "private").await;
    let mut eve_ws = eve.socket().await;
    let mut bob_ws = bob.socket().await;

    for (method, path, body) in [
        (Method::GET, format!("/api/conversations/{conv}"), None),
        (
            Method::GET,
            format!("/api/conversations/{conv}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "hi"})),
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/read"),
            Some(json!({"seq": 1})),
        ),
        (
            Method::POST,
            format!("/api/messages/{}/read", first["id"].as_str().unwrap_or("")),
            Some(json!({})),
        ),
    ] {
        let (s, h, b) = eve.call(method.clone(), &path, body).await;
        assert_problem(s, &h, &b, 404);
    }
    let (_, list) = eve.get("/api/conversations").await;
    assert_eq!(
        list["conversations"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // Typing into someone else's conversation over the socket is refused too.
    send_frame(
        &mut eve_ws,
        json!({"type": "typing", "conversation_id": conv, "is_typing": true}),
    )
    .await;
    let err = next_event(&mut eve_ws, "error", WAIT).await;
    assert!(
        err["data"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not found"),
        "{err}"
    );

    alice.send(&conv, "still private").await;
    next_event(&mut bob_ws, "message.created", WAIT).await;
    // Bob got it; Eve, connected the whole time, gets nothing.
    let leaked = messages_within(&mut eve_ws, Duration::from_millis(500)).await;
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[tokio::test]
async fn typing_reaches_the_other_participant_but_not_the_typist() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let conv = alice.direct_with(&bob).await;
    let mut alice_ws = alice.socket().await;
    let mut bob_ws = bob.socket().await;
    send_frame(
        &mut alice_ws,
        json!({"type": "typing", "conversation_id": conv, "is_typing": true}),
    )
    .await;
    let e = next_event(&mut bob_ws, "typing", WAIT).await;
    assert_eq!(e["data"]["user_id"], alice.id.as_str());
    assert_eq!(e["data"]["is_typing"], true);
    // The typist's own socket gets no echo: the next frame it sees is the pong.
    send_frame(&mut alice_ws, json!({"type": "ping"})).await;
    let first = next_event(&mut alice_ws, "pong", WAIT).await;
    assert_eq!(first["type"], "pong");
}

#[tokio::test]
async fn sockets_need_a_fresh_single_use_ticket() {
    let alice = register("alice").await;
    let ws_base = base().replacen("http", "ws", 1);
    assert!(tokio_tungstenite::connect_async(format!("{ws_base}/ws"))
        .await
        .is_err());
    assert!(
        tokio_tungstenite::connect_async(format!("{ws_base}/ws?ticket=forged"))
            .await
            .is_err()
    );
    let (_, body) = alice.post("/api/ws-ticket", json!({})).await;
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(body["expires_in"], 30);
    let url = format!("{ws_base}/ws?ticket={ticket}");
    let first = tokio_tungstenite::connect_async(&url).await;
    assert!(first.is_ok());
    let second = tokio_tungstenite::connect_async(&url).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("reused ticket must be refused with 401, got {other:?}"),
    }
    // Without a bearer token there is no ticket.
    let (s, h, b) = raw(Method::POST, "/api/ws-ticket", &[], None).await;
    assert_problem(s, &h, &b, 401);
}

#[tokio::test]
async fn concurrent_creation_of_one_direct_conversation_yields_one() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (a, b) = (alice.clone(), bob.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                a.direct_with(&b).await
            } else {
                b.direct_with(&a).await
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn a_retried_client_id_returns_the_same_message() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let conv = alice.direct_with(&bob).await;
    let body = json!({"content": "once", "client_id": "retry-1"});
    let path = format!("/api/conversations/{conv}/messages");
    let (s1, m1) = alice.post(&path, body.clone()).await;
    let (s2, m2) = alice.post(&path, body).await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(m1["id"], m2["id"]);
    let (_, _, page) = alice.call(Method::GET, &path, None).await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bad_messaging_input_is_a_clear_4xx() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let conv = alice.direct_with(&bob).await;
    let path = format!("/api/conversations/{conv}/messages");

    // Bodies: malformed JSON, missing field, wrong type, blank, NUL, too long.
    let json_ct = ("content-type", "application/json");
    let auth = format!("Bearer {}", alice.access);
    let auth_h = ("authorization", auth.as_str());
    let (s, h, b) = raw(
        Method::POST,
        &path,
        &[json_ct, auth_h],
        Some("{\"content\":"),
    )
    .await;
    assert_problem(s, &h, &b, 400);
    let (s, h, b) = raw(Method::POST, &path, &[json_ct, auth_h], Some("{}")).await;
    assert_problem(s, &h, &b, 422);
    for content in [
        json!(5),
        json!("   "),
        json!("a\u{0}b"),
        json!("x".repeat(4001)),
    ] {
        let (s, h, b) = alice
            .call(Method::POST, &path, Some(json!({"content": content})))
            .await;
        assert_problem(s, &h, &b, 422);
    }
    let (s, h, b) = alice
        .call(
            Method::POST,
            &path,
            Some(json!({"content": "hi", "reply_to": uuid::Uuid::now_v7()})),
        )
        .await;
    assert_problem(s, &h, &b, 422);

    // Conversations: unknown user, self only, a name on a direct chat.
    for body in [
        json!({"participant_ids": [uuid::Uuid::now_v7()]}),
        json!({"participant_ids": [alice.id]}),
        json!({"participant_ids": "nope"}),
        json!({"participant_ids": [bob.id], "is_group": false, "name": "x"}),
    ] {
        let (s, h, b) = alice
            .call(Method::POST, "/api/conversations", Some(body))
            .await;
        assert_problem(s, &h, &b, 422);
    }

    // Ids: unknown and malformed.
    let (s, h, b) = alice
        .call(
            Method::GET,
            &format!("/api/conversations/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_problem(s, &h, &b, 404);
    let (s, h, b) = alice
        .call(Method::GET, "/api/conversations/not-a-uuid/messages", None)
        .await;
    assert_problem(s, &h, &b, 404);

    // Query and header parameters.
    for q in ["limit=0", "limit=101", "limit=abc", "before=-1", "after=x"] {
        let (s, h, b) = alice.call(Method::GET, &format!("{path}?{q}"), None).await;
        assert_problem(s, &h, &b, 400);
    }
    let (s, h, b) = alice
        .call(Method::GET, "/api/conversations?cursor=garbage", None)
        .await;
    assert_problem(s, &h, &b, 400);
    let (s, h, b) = alice
        .call_with(
            Method::GET,
            &path,
            None,
            &[("x-consistency-token", "not-an-lsn")],
        )
        .await;
    assert_problem(s, &h, &b, 400);
    let (s, h, b) = alice.call(Method::GET, "/api/ws-ticket", None).await;
    assert_eq!(s.as_u16(), 405, "{b}");
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let (s, h, b) = alice
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/read"),
            Some(json!({"seq": -1})),
        )
        .await;
    assert_problem(s, &h, &b, 422);
}

/// Inserting a row that references a conversation takes `FOR KEY SHARE` on the
/// conversation's row (the foreign-key check, PostgreSQL docs §13.3.2); the notification
/// worker does so for every digest and notification it writes. Sends, reactions and
/// membership changes lock the conversation `FOR NO KEY UPDATE`, which that lock does not
/// exclude: none of them waits for such a transaction to end. (With `FOR UPDATE` each one
/// waited until it committed, and a batch of sends and the worker queued on each other.)
#[tokio::test]
async fn a_foreign_key_check_on_a_conversation_holds_back_no_send_or_change() {
    let (a, b, c) = (
        register("fk").await,
        register("fk").await,
        register("fk").await,
    );
    let group = a.group(&[&b], "Key share").await;
    let first = a.send(&group, "before the check").await;
    let before = stored_seqs(&group).await.len();
    let id: uuid::Uuid = group.parse().expect("uuid");
    let mut db = admin(false).await;
    let check = db.transaction().await.expect("transaction");
    check
        .execute(
            "SELECT 1 FROM messaging.conversations WHERE id = $1 FOR KEY SHARE",
            &[&id],
        )
        .await
        .expect("key share");
    // Longer than the stack's statement timeout (5 s): a send held back by the check fails
    // with 503 (or does not answer in time) instead of passing late.
    let bound = WAIT;
    let sent = tokio::time::timeout(bound, a.send(&group, "during the check")).await;
    assert!(sent.is_ok(), "a send waited for the foreign-key check");
    let message = first["id"].as_str().expect("id");
    let reacted = tokio::time::timeout(
        bound,
        b.call(
            Method::PUT,
            &format!("/api/messages/{message}/reactions/%F0%9F%91%8D"),
            None,
        ),
    )
    .await
    .expect("a reaction waited for the foreign-key check");
    assert_eq!(reacted.0, StatusCode::OK, "{}", reacted.2);
    let added = tokio::time::timeout(
        bound,
        a.post(
            &format!("/api/conversations/{group}/participants"),
            json!({"user_ids": [c.id]}),
        ),
    )
    .await
    .expect("a membership change waited for the foreign-key check");
    assert!(added.0.is_success(), "{} {}", added.0, added.1);
    check.rollback().await.expect("rollback");
    let seqs = stored_seqs(&group).await;
    assert_eq!(seqs.len(), before + 2, "the send and the join, each once");
    assert!(
        seqs.iter().zip(1..).all(|(s, n)| *s == n),
        "gapless: {seqs:?}"
    );
}
