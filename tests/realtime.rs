//! Live delivery on TWO messaging instances behind NGINX: cross-instance fan-out, every event
//! kind with its seq, backpressure, typing expiry, presence across devices, frame limits.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use futures_util::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAIT: Duration = Duration::from_secs(10);

fn two_instances() -> Vec<(String, String)> {
    let all = instances();
    assert!(
        all.len() >= 2,
        "the test stack runs two messaging instances: {all:?}"
    );
    all
}

#[tokio::test]
async fn a_message_sent_through_one_instance_reaches_sockets_on_the_other() {
    let inst = two_instances();
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;
    let mut on_first = socket_on(&b, &inst[0].0).await;
    let mut on_second = socket_on(&b, &inst[1].0).await;
    for (i, (_, url)) in inst.iter().take(2).enumerate() {
        let (s, _) = call_instance(
            &a,
            url,
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": format!("via {i}")})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    for ws in [&mut on_first, &mut on_second] {
        let got: BTreeSet<i64> = [
            next_event(ws, "message.created", WAIT).await,
            next_event(ws, "message.created", WAIT).await,
        ]
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
        assert_eq!(got, BTreeSet::from([1, 2]));
    }
}

#[tokio::test]
async fn every_event_kind_arrives_with_the_right_seq() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let (s, conv) = a
        .post(
            "/api/conversations",
            json!({"participant_ids": [b.id], "name": "Kinds"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let conv = conv["id"].as_str().expect("id").to_owned();
    let (mut ws, _) = socket_hello(&b).await;
    let mut a_ws = a.socket().await;

    let m = a.send(&conv, "hello").await;
    let e = next_event(&mut ws, "message.created", WAIT).await;
    assert_eq!(
        (e["seq"].clone(), e["conversation_id"].clone()),
        (m["seq"].clone(), json!(conv))
    );
    let created_rev = e["rev"].as_i64().expect("rev");
    let path = format!("/api/messages/{}", m["id"].as_str().unwrap_or(""));
    a.call(Method::PATCH, &path, Some(json!({"content": "hello!"})))
        .await;
    let e = next_event(&mut ws, "message.edited", WAIT).await;
    assert_eq!(e["seq"], m["seq"]);
    assert!(e["rev"].as_i64().expect("rev") > created_rev);
    a.call(Method::DELETE, &path, None).await;
    let e = next_event(&mut ws, "message.deleted", WAIT).await;
    assert_eq!(e["seq"], m["seq"]);

    b.post(
        &format!("/api/conversations/{conv}/read"),
        json!({"seq": 1}),
    )
    .await;
    let e = next_event(&mut a_ws, "read", WAIT).await;
    assert_eq!(
        (e["seq"].clone(), e["data"]["user_id"].clone()),
        (json!(1), json!(b.id))
    );

    send_frame(
        &mut a_ws,
        json!({"type": "typing", "conversation_id": conv, "is_typing": true}),
    )
    .await;
    let e = next_event(&mut ws, "typing", WAIT).await;
    assert_eq!(e["data"]["is_typing"], true);

    let (_, _, added) = a
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/participants"),
            Some(json!({"user_ids": [c.id]})),
        )
        .await;
    let e = next_event(&mut ws, "participant.added", WAIT).await;
    assert_eq!(e["seq"], 2, "the seq of the system message: {added}");
    a.call(
        Method::PATCH,
        &format!("/api/conversations/{conv}"),
        Some(json!({"name": "Kinds 2"})),
    )
    .await;
    let e = next_event(&mut ws, "conversation.updated", WAIT).await;
    assert_eq!(e["seq"], 3);
    assert_eq!(e["data"]["conversation"]["name"], "Kinds 2");
    a.call(
        Method::DELETE,
        &format!("/api/conversations/{conv}/participants/{}", c.id),
        None,
    )
    .await;
    let e = next_event(&mut ws, "participant.removed", WAIT).await;
    assert_eq!(
        (e["seq"].clone(), e["data"]["user_ids"][0].clone()),
        (json!(4), json!(c.id))
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_while_others_on_its_instance_keep_receiving() {
    let inst = two_instances();
    let (s1, s2) = (register("sender1").await, register("sender2").await);
    let slow = register("slow").await;
    let normal = register("normal").await;
    let (s, conv) = s1
        .post(
            "/api/conversations",
            json!({"participant_ids": [s2.id, slow.id, normal.id], "name": "Flood"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let conv = conv["id"].as_str().expect("id").to_owned();
    // Both straight to one instance: NGINX in between would add megabytes of its own
    // buffering before the instance could notice the slow reader.
    let mut slow_ws = small_buffer_socket_at(&slow, &inst[0].1).await;
    let mut normal_ws = socket_at(&normal, &inst[0].1).await;

    // 500 frames of 16 KB (4000 four-byte characters): more than the kernel buffers
    // (~4 MB on loopback) plus the socket's queue can hold.
    const PER_SENDER: i64 = 250;
    let body = "\u{1F600}".repeat(4000);
    let senders: Vec<_> = [s1.clone(), s2.clone()]
        .into_iter()
        .map(|u| {
            let (conv, body) = (conv.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..PER_SENDER {
                    u.send(&conv, &body).await;
                }
            })
        })
        .collect();
    // The normal client reads everything, in order, while the slow one reads nothing.
    let mut seqs = Vec::new();
    while seqs.len() < (2 * PER_SENDER) as usize {
        let e = next_event(&mut normal_ws, "message.created", Duration::from_secs(30)).await;
        seqs.push(e["seq"].as_i64().expect("seq"));
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert_eq!(
        seqs,
        (1..=2 * PER_SENDER).collect::<Vec<_>>(),
        "in order, none missing"
    );
    let (code, frames) = until_closed(&mut slow_ws, WAIT).await;
    let got = frames
        .iter()
        .filter(|f| f["type"] == "message.created")
        .count();
    assert!(
        got < (2 * PER_SENDER) as usize,
        "the slow client was cut off ({got} frames)"
    );
    assert!(code.is_none() || code == Some(1008), "{code:?}");
}

#[tokio::test]
async fn typing_expires_without_a_refresh() {
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;
    let mut a_ws = a.socket().await;
    let mut b_ws = b.socket().await;
    send_frame(
        &mut a_ws,
        json!({"type": "typing", "conversation_id": conv, "is_typing": true}),
    )
    .await;
    let on = next_event(&mut b_ws, "typing", WAIT).await;
    assert_eq!(on["data"]["is_typing"], true);
    assert!(on["data"]["expires_in"].as_f64().is_some());
    // Nobody refreshes it: it expires (TYPING_TTL_SECS=1 in the test stack).
    let off = next_event(&mut b_ws, "typing", Duration::from_secs(5)).await;
    assert_eq!(off["data"]["is_typing"], false);
    assert_eq!(off["data"]["user_id"], a.id.as_str());
}

#[tokio::test]
async fn presence_follows_the_last_device_across_instances() {
    let inst = two_instances();
    let a = register("a").await;
    let watcher = register("watcher").await;
    let conv = a.direct_with(&watcher).await;
    let mut w = watcher.socket().await;
    let phone = socket_on(&a, &inst[0].0).await;
    let e = next_event_of(&mut w, "presence", &a.id, WAIT).await;
    assert_eq!(
        (e["data"]["user_id"].clone(), e["data"]["online"].clone()),
        (json!(a.id), json!(true))
    );
    // socket_on may have opened and closed sockets on the other instance while looking for
    // this one (NGINX balances, other tests connect too); let their grace periods (1 s) pass
    // until a's presence is quiet, and online.
    let mut last = e;
    loop {
        let seen: Vec<Value> = frames_within(&mut w, &["presence"], Duration::from_millis(1500))
            .await
            .into_iter()
            .filter(|f| f["data"]["user_id"] == a.id.as_str())
            .collect();
        match seen.last() {
            Some(f) => last = f.clone(),
            None => break,
        }
    }
    assert_eq!(last["data"]["online"], true, "{last}");
    let laptop = socket_on(&a, &inst[1].0).await;
    drop(phone);
    // Still online on the laptop: no offline notice past the grace period (1 s).
    let flaps: Vec<Value> = frames_within(&mut w, &["presence"], Duration::from_millis(2500))
        .await
        .into_iter()
        .filter(|f| f["data"]["user_id"] == a.id.as_str())
        .collect();
    assert!(flaps.is_empty(), "{flaps:?}");
    let (_, details) = watcher.get(&format!("/api/conversations/{conv}")).await;
    let me = details["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["user_id"] == a.id.as_str())
        .cloned()
        .expect("a");
    assert_eq!(me["online"], true, "{me}");
    drop(laptop);
    let e = next_event_of(&mut w, "presence", &a.id, WAIT).await;
    assert_eq!(e["data"]["online"], false);
    assert!(e["data"]["last_seen_at"].is_string(), "{e}");
}

#[tokio::test]
async fn frames_too_large_or_too_many_close_the_socket() {
    let a = register("a").await;
    let mut ws = a.socket().await;
    ws.send(WsMessage::Text("x".repeat(20 * 1024)))
        .await
        .expect("send");
    let (code, _) = until_closed(&mut ws, WAIT).await;
    assert_eq!(code, Some(1009));

    let mut ws = a.socket().await;
    for _ in 0..30 {
        if ws
            .send(WsMessage::Text(json!({"type": "ping"}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, _) = until_closed(&mut ws, WAIT).await;
    assert_eq!(code, Some(1008), "more than 20 frames a second");
}

#[tokio::test]
async fn bad_client_frames_get_an_error_frame_and_the_socket_stays() {
    let a = register("a").await;
    let mut ws = a.socket().await;
    for bad in [
        json!({"type": "dance"}),
        json!({"type": "read", "conversation_id": "x", "seq": 1}),
        json!({"nope": 1}),
    ] {
        send_frame(&mut ws, bad).await;
        let e = next_event(&mut ws, "error", WAIT).await;
        assert!(e["data"]["detail"].is_string());
    }
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {uuid::Uuid::now_v7().to_string(): 0}}),
    )
    .await;
    let e = next_event(&mut ws, "error", WAIT).await;
    assert_eq!(e["data"]["detail"], "conversation not found");
    send_frame(&mut ws, json!({"type": "ping"})).await;
    next_event(&mut ws, "pong", WAIT).await;
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed_and_says_reload_when_too_far_behind() {
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;
    let first = a.send(&conv, "one").await;
    a.send(&conv, "two").await;
    // While b is away: three more, an edit of the first, a deletion of the second.
    for t in ["three", "four", "five"] {
        a.send(&conv, t).await;
    }
    a.call(
        Method::PATCH,
        &format!("/api/messages/{}", first["id"].as_str().unwrap_or("")),
        Some(json!({"content": "one!"})),
    )
    .await;
    let mut ws = b.socket().await;
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {conv.clone(): 2}}),
    )
    .await;
    let mut got = Vec::new();
    loop {
        let frame = next_frame(&mut ws).await;
        if frame["type"] == "resumed" {
            assert_eq!(frame["seq"], 5);
            break;
        }
        if frame["type"].as_str().unwrap_or("").starts_with("message.") {
            got.push((
                frame["type"].as_str().unwrap_or("").to_owned(),
                frame["seq"].as_i64().unwrap_or(0),
            ));
        }
    }
    assert_eq!(
        got,
        vec![
            ("message.created".to_owned(), 3),
            ("message.created".to_owned(), 4),
            ("message.created".to_owned(), 5),
            ("message.edited".to_owned(), 1),
        ]
    );
    // Live delivery goes on after the replay, with nothing doubled.
    a.send(&conv, "six").await;
    let e = next_event(&mut ws, "message.created", WAIT).await;
    assert_eq!(e["seq"], 6);

    // Too far behind (RESUME_MAX_EVENTS=50 in the test stack): reload.
    for i in 0..55 {
        a.send(&conv, &format!("bulk {i}")).await;
    }
    let mut ws = b.socket().await;
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {conv.clone(): 0}}),
    )
    .await;
    let e = next_event(&mut ws, "resume.reload", WAIT).await;
    assert_eq!(e["conversation_id"], conv.as_str());
}
