//! Group management through NGINX: admin rights, system messages, membership periods,
//! succession, unread counts.

use std::time::Duration;

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn group(owner: &User, members: &[&User], name: &str) -> String {
    owner.group(members, name).await
}

/// The caller's whole visible history, oldest first (read on the primary by token-less
/// replica reads until it has `min_len` messages).
async fn history(user: &User, conv: &str, min_last_seq: i64) -> Vec<Value> {
    eventually(WAIT, || async {
        let (s, body) = user
            .get(&format!(
                "/api/conversations/{conv}/messages?after=0&limit=100"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let msgs = body["messages"].as_array()?.clone();
        (msgs.last().and_then(|m| m["seq"].as_i64()).unwrap_or(0) >= min_last_seq).then_some(msgs)
    })
    .await
}

fn contents(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

async fn entry(user: &User, conv: &str, last_seq: i64) -> Value {
    eventually(WAIT, || async {
        let (_, body) = user.get("/api/conversations").await;
        body["conversations"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == conv && c["last_seq"] == last_seq)
            .cloned()
    })
    .await
}

#[tokio::test]
async fn members_get_403_for_admin_actions_and_every_change_is_a_system_message() {
    let owner = register("owner").await;
    let m1 = register("m1").await;
    let m2 = register("m2").await;
    let m3 = register("m3").await;
    let stranger = register("stranger").await;
    let conv = group(&owner, &[&m1, &m2], "Team").await;
    owner.send(&conv, "before m3").await;

    let base = format!("/api/conversations/{conv}");
    let attempts = [
        (Method::PATCH, base.clone(), Some(json!({"name": "Mine"}))),
        (
            Method::POST,
            format!("{base}/participants"),
            Some(json!({"user_ids": [m3.id]})),
        ),
        (
            Method::DELETE,
            format!("{base}/participants/{}", m2.id),
            None,
        ),
        (
            Method::PATCH,
            format!("{base}/participants/{}", m2.id),
            Some(json!({"role": "admin"})),
        ),
    ];
    for (method, path, body) in &attempts {
        let (s, h, b) = m1.call(method.clone(), path, body.clone()).await;
        assert_problem(s, &h, &b, 403);
        let (s, h, b) = stranger.call(method.clone(), path, body.clone()).await;
        assert_problem(s, &h, &b, 404);
    }

    let (s, _, conv_body) = owner
        .call(Method::PATCH, &base, Some(json!({"name": "Core team"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{conv_body}");
    assert_eq!(conv_body["name"], "Core team");
    let (s, _, conv_body) = owner
        .call(
            Method::POST,
            &format!("{base}/participants"),
            Some(json!({"user_ids": [m3.id]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{conv_body}");
    assert_eq!(conv_body["participants"].as_array().map(Vec::len), Some(4));
    let (s, _, _) = owner
        .call(
            Method::PATCH,
            &format!("{base}/participants/{}", m1.id),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // m1 is an admin now and may rename.
    let (s, _, _) = m1
        .call(Method::PATCH, &base, Some(json!({"name": "Renamed by m1"})))
        .await;
    assert_eq!(s, StatusCode::OK);

    let msgs = history(&owner, &conv, 5).await;
    let actions: Vec<&str> = msgs
        .iter()
        .filter(|m| m["kind"] == "system")
        .filter_map(|m| m["system"]["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec![
            "conversation.renamed",
            "participant.added",
            "participant.role",
            "conversation.renamed"
        ]
    );
    let seqs: Vec<i64> = msgs.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(
        seqs,
        (1..=5).collect::<Vec<_>>(),
        "system messages take seqs like any other"
    );

    // m3 sees history from their addition on, not what was said before.
    let m3_msgs = history(&m3, &conv, 5).await;
    assert!(
        !contents(&m3_msgs).contains(&"before m3".to_owned()),
        "{m3_msgs:?}"
    );
    assert_eq!(m3_msgs[0]["system"]["action"], "participant.added");

    // Bad input: unknown role, unknown user, demoting the last admin is refused later.
    let (s, h, b) = owner
        .call(
            Method::PATCH,
            &format!("{base}/participants/{}", m2.id),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_problem(s, &h, &b, 422);
    let (s, h, b) = owner
        .call(
            Method::POST,
            &format!("{base}/participants"),
            Some(json!({"user_ids": [uuid::Uuid::now_v7()]})),
        )
        .await;
    assert_problem(s, &h, &b, 422);
    let (s, h, b) = owner
        .call(Method::PATCH, &base, Some(json!({"name": "  "})))
        .await;
    assert_problem(s, &h, &b, 422);
}

#[tokio::test]
async fn direct_conversations_have_no_group_actions() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let conv = a.direct_with(&b).await;
    let base = format!("/api/conversations/{conv}");
    for (method, path, body) in [
        (Method::PATCH, base.clone(), Some(json!({"name": "x"}))),
        (
            Method::POST,
            format!("{base}/participants"),
            Some(json!({"user_ids": [c.id]})),
        ),
        (Method::POST, format!("{base}/leave"), None),
    ] {
        let (s, h, body) = a.call(method, &path, body).await;
        assert_problem(s, &h, &body, 422);
    }
}

#[tokio::test]
async fn a_removed_user_keeps_history_up_to_the_removal_and_sees_nothing_after() {
    let owner = register("owner").await;
    let m1 = register("m1").await;
    let m2 = register("m2").await;
    let conv = group(&owner, &[&m1, &m2], "Team").await;
    owner.send(&conv, "before removal").await;
    let mut m1_ws = m1.socket().await;
    let mut m2_ws = m2.socket().await;

    let (s, _, _) = owner
        .call(
            Method::DELETE,
            &format!("/api/conversations/{conv}/participants/{}", m1.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let removed = next_event(&mut m1_ws, "participant.removed", WAIT).await;
    assert_eq!(removed["data"]["user_ids"][0], m1.id.as_str());

    owner.send(&conv, "after removal").await;
    let got = next_event(&mut m2_ws, "message.created", WAIT).await;
    assert_eq!(got["data"]["system"]["action"], "participant.removed");
    let got = next_event(&mut m2_ws, "message.created", WAIT).await;
    assert_eq!(got["data"]["content"], "after removal");
    let leaked: Vec<Value> = messages_within(&mut m1_ws, Duration::from_millis(300)).await;
    assert!(
        leaked
            .iter()
            .all(|m| m["data"]["content"] != "after removal"),
        "{leaked:?}"
    );

    // History ends at the removal notice.
    let mine = history(&m1, &conv, 2).await;
    assert_eq!(
        mine.last().map(|m| m["system"]["action"].clone()),
        Some(json!("participant.removed"))
    );
    assert!(contents(&mine).contains(&"before removal".to_owned()));
    assert!(!contents(&mine).contains(&"after removal".to_owned()));
    // Listed as left, with its last visible message; cannot send; search sees only before.
    let listed = entry(&m1, &conv, 2).await;
    assert_eq!(listed["left"], true);
    let (s, h, b) = m1
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "hi"})),
        )
        .await;
    assert_problem(s, &h, &b, 404);
    let (_, found) = m1.get("/api/search?q=removal").await;
    let found: Vec<&str> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["message"]["content"].as_str())
        .collect();
    assert_eq!(found, vec!["before removal"]);
}

#[tokio::test]
async fn the_last_admin_leaving_promotes_the_longest_standing_member() {
    let owner = register("owner").await;
    let first = register("first").await;
    let later = register("later").await;
    let conv = group(&owner, &[&first], "Team").await;
    let (s, _, _) = owner
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/participants"),
            Some(json!({"user_ids": [later.id]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = owner
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/leave"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let msgs = history(&first, &conv, 3).await;
    let last = msgs.last().expect("messages");
    assert_eq!(last["system"]["action"], "participant.role");
    assert_eq!(last["system"]["user_ids"][0], first.id.as_str());
    let (s, _, _) = first
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}"),
            Some(json!({"name": "Ours"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the promoted member may act as admin");
    let (s, _, _) = later
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}"),
            Some(json!({"name": "No"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The last admin cannot demote themself into an admin-less group.
    let (s, h, b) = first
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}/participants/{}", first.id),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_problem(s, &h, &b, 422);
}

#[tokio::test]
async fn unread_counts_are_right_after_add_remove_and_leave() {
    let owner = register("owner").await;
    let m1 = register("m1").await;
    let m2 = register("m2").await;
    let conv = group(&owner, &[&m1], "Team").await;
    owner.send(&conv, "one").await; // seq 1
    let (s, _, _) = owner
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/participants"),
            Some(json!({"user_ids": [m2.id]})),
        )
        .await; // seq 2
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        entry(&m2, &conv, 2).await["unread_count"],
        0,
        "a new member starts with nothing unread"
    );
    assert_eq!(entry(&m1, &conv, 2).await["unread_count"], 2);
    owner.send(&conv, "two").await; // seq 3
    assert_eq!(entry(&m2, &conv, 3).await["unread_count"], 1);

    let (s, _, _) = owner
        .call(
            Method::DELETE,
            &format!("/api/conversations/{conv}/participants/{}", m1.id),
            None,
        )
        .await; // seq 4
    assert_eq!(s, StatusCode::NO_CONTENT);
    owner.send(&conv, "three").await; // seq 5
                                      // m1's count stops at the removal; m2's goes on.
    assert_eq!(entry(&m1, &conv, 4).await["unread_count"], 4);
    assert_eq!(entry(&m2, &conv, 5).await["unread_count"], 3);
    let (s, _, _) = m2
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/leave"),
            None,
        )
        .await; // seq 6
    assert_eq!(s, StatusCode::NO_CONTENT);
    let left = entry(&m2, &conv, 6).await;
    assert_eq!(
        left["unread_count"], 0,
        "leaving reads up to one's own departure"
    );
    assert_eq!(left["left"], true);
    assert_eq!(entry(&owner, &conv, 6).await["unread_count"], 1);
}
