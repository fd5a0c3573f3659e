//! Group commit under attack (issue 16): sends fired at once through NGINX onto both
//! instances, so they share batches and race across instances — every conversation's `seq`
//! stays gapless, nothing accepted is lost, a `client_id` appends once, and a bad send in a
//! burst fails alone.

use std::collections::{BTreeMap, HashSet};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

async fn group_of(owner: &User, members: &[&User]) -> String {
    let ids: Vec<&str> = members.iter().map(|u| u.id.as_str()).collect();
    let (s, body) = owner
        .post(
            "/api/conversations",
            json!({"participant_ids": ids, "name": "burst"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// Sends `body` to `conversation` as a client should: a burst may meet admission control on
/// a loaded machine (503 with `Retry-After`, nothing appended), and the client then tries
/// again a second later (at most 10 tries; the last answer is returned). A send that may
/// append carries a `client_id`, so a retry after a 503 whose commit did happen (the
/// primary lost mid-answer) repeats nothing.
async fn post_message(user: &User, conversation: &str, body: Value) -> (StatusCode, Value) {
    let mut tries = 0;
    loop {
        let answer = user
            .post(
                &format!("/api/conversations/{conversation}/messages"),
                body.clone(),
            )
            .await;
        tries += 1;
        if answer.0 != StatusCode::SERVICE_UNAVAILABLE || tries == 10 {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn concurrent_sends_keep_every_seq_gapless_and_lose_nothing() {
    let users = join_all(["burst0", "burst1", "burst2", "burst3"].map(register)).await;
    let group = group_of(&users[0], &[&users[1], &users[2], &users[3]]).await;
    let direct = users[0].direct_with(&users[1]).await;

    // 4 × 30 into the group and 2 × 20 into the direct conversation, all at once.
    let mut sends = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for n in 0..30 {
            sends.push((user, group.clone(), format!("g{u}-{n}")));
        }
        if u < 2 {
            for n in 0..20 {
                sends.push((user, direct.clone(), format!("d{u}-{n}")));
            }
        }
    }
    // A burst this size may meet admission control (503 + Retry-After) on a loaded machine;
    // the client then retries with the same client_id, as the contract asks, and the send
    // must still land exactly once and gapless.
    let answers = join_all(sends.iter().map(|(user, conv, text)| {
        post_message(user, conv, json!({"content": text, "client_id": text}))
    }))
    .await;
    let mut accepted: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for ((_, conv, text), (s, body)) in sends.iter().zip(&answers) {
        assert_eq!(*s, StatusCode::CREATED, "{text}: {body}");
        assert_eq!(body["content"], text.as_str());
        assert!(ids.insert(body["id"].as_str().expect("id").to_owned()));
        accepted
            .entry(conv.clone())
            .or_default()
            .push(body["seq"].as_i64().expect("seq"));
    }
    for (conv, mut answered) in accepted {
        answered.sort_unstable();
        let stored = stored_seqs(&conv).await;
        let expected: Vec<i64> = (1..=stored.len() as i64).collect();
        assert_eq!(stored, expected, "gapless and unique in {conv}");
        assert!(
            answered.iter().all(|s| stored.contains(s)),
            "every 201 is stored"
        );
        // Only the group's creation record is not one of these sends.
        assert!(
            stored.len() - answered.len() <= 1,
            "{stored:?} vs {answered:?}"
        );
    }

    // The burst was group-committed: some batch held more than one send.
    let base_port: u16 = std::env::var("MESSAGING_METRICS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19182);
    let mut shared = false;
    for n in 0..instances().len().max(1) as u16 {
        let text = http()
            .get(format!("http://127.0.0.1:{}/metrics", base_port + n))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        shared |= value("switchboard_send_batch_size_count")
            > value("switchboard_send_batch_size_bucket{le=\"1\"}");
    }
    assert!(shared, "no batch held more than one send");

    // Each sender has read their own last message (the read marker moved with the batch).
    let group_id: uuid::Uuid = group.parse().expect("uuid");
    for user in &users {
        let uid: uuid::Uuid = user.id.parse().expect("uuid");
        let marker: i64 = admin(false)
            .await
            .query_one(
                "SELECT last_read_seq FROM messaging.participants
                  WHERE conversation_id = $1 AND user_id = $2",
                &[&group_id, &uid],
            )
            .await
            .expect("marker")
            .get(0);
        let mine = answers
            .iter()
            .zip(&sends)
            .filter(|(_, (u, c, _))| u.id == user.id && *c == group)
            .filter_map(|((_, b), _)| b["seq"].as_i64())
            .max();
        assert_eq!(Some(marker), mine, "{}", user.username);
    }
}

#[tokio::test]
async fn a_bad_send_in_a_burst_fails_alone_and_a_client_id_appends_once() {
    let (a, b, stranger) = (
        register("burst_a").await,
        register("burst_b").await,
        register("burst_x").await,
    );
    let conv = a.direct_with(&b).await;
    let elsewhere = stranger.direct_with(&b).await;
    let foreign = stranger.send(&elsewhere, "not yours to quote").await;
    let foreign_id = foreign["id"].as_str().expect("id").to_owned();

    enum Kind {
        Valid,
        Stranger,
        BadReply,
        Retry,
    }
    let mut calls: Vec<(Kind, &User, Value)> = Vec::new();
    for n in 0..20 {
        calls.push((
            Kind::Valid,
            &a,
            json!({"content": format!("ok {n}"), "client_id": format!("ok-{n}")}),
        ));
        if n < 10 {
            calls.push((Kind::Stranger, &stranger, json!({"content": "let me in"})));
            calls.push((
                Kind::BadReply,
                &b,
                json!({"content": "quoting", "reply_to": foreign_id}),
            ));
            calls.push((
                Kind::Retry,
                &b,
                json!({"content": "once", "client_id": "retry-42"}),
            ));
        }
    }
    let answers = join_all(
        calls
            .iter()
            .map(|(_, user, body)| post_message(user, &conv, body.clone())),
    )
    .await;
    let mut retried = HashSet::new();
    let mut created = 0;
    for ((kind, _, sent), (s, body)) in calls.iter().zip(&answers) {
        match kind {
            Kind::Valid => {
                assert_eq!(*s, StatusCode::CREATED, "{sent}: {body}");
                created += 1;
            }
            Kind::Stranger => assert_eq!(*s, StatusCode::NOT_FOUND, "{body}"),
            Kind::BadReply => {
                assert_eq!(*s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
                assert!(body["errors"]["reply_to"].is_array(), "{body}");
            }
            Kind::Retry => {
                assert!(
                    *s == StatusCode::CREATED || *s == StatusCode::OK,
                    "{s}: {body}"
                );
                if *s == StatusCode::CREATED {
                    created += 1;
                }
                retried.insert(body["id"].as_str().expect("id").to_owned());
            }
        }
    }
    assert_eq!(retried.len(), 1, "every retry answers the one message");
    assert_eq!(created, 21, "20 sends and the client_id's one");
    assert_eq!(stored_seqs(&conv).await, (1..=21).collect::<Vec<i64>>());
}

/// Admission control trusts the edge's `X-Request-Start` (src/platform/queue_time.rs): a
/// client that could send its own would make every send look like it had waited seconds,
/// and its instance would cut the sends it accepts at once until it refused most of them.
/// Sixteen waves of ten sends 50 ms apart — the first claiming to be fresh, the others to
/// have started in 2001 — are accepted: NGINX replaces the header. (Passed through, the
/// stamps would stand for CoDel's 100 ms by the fourth wave and cut each instance's limit
/// to half the five sends it holds, and most sends of the later waves would be refused — the
/// in-process fault test `a_send_that_waited_before_its_handler_counts_toward_its_queueing_delay`
/// shows the rule. A few refusals are allowed: on a loaded 2-core CI machine real latencies
/// can wait past the target for a while.)
#[tokio::test]
async fn a_client_cannot_forge_how_long_its_sends_waited() {
    let (a, b) = (register("forge_a").await, register("forge_b").await);
    let conv = a.direct_with(&b).await;
    let client = http();
    let answers = join_all((0..160).map(|n| {
        let (client, conv, token) = (&client, &conv, &a.access);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(50 * (n / 10) as u64)).await;
            let mut r = client
                .post(format!("{}/api/conversations/{conv}/messages", base()))
                .bearer_auth(token);
            // The first wave claims to be fresh, so an instance that believed it would take
            // the edge's clock offset as zero; the rest claim to have waited since 2001.
            let forged = if n < 10 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after the epoch");
                format!("t={}.{:03}", now.as_secs(), now.subsec_millis())
            } else {
                "t=1000000000.000".to_owned()
            };
            r = r.header("X-Request-Start", forged);
            let r = r
                .json(&json!({"content": format!("forged {n}")}))
                .send()
                .await
                .expect("request");
            (r.status(), r.text().await.unwrap_or_default())
        }
    }))
    .await;
    let mut refused = 0;
    for (status, body) in &answers {
        match *status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        refused <= answers.len() / 8,
        "{refused} of {} forged sends refused: the forged stamps counted",
        answers.len()
    );
}
