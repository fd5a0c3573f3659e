//! Read routing on the real primary + streaming replica: reads are served by the replica,
//! and a user's own write is visible on their next read even while the replica is paused.
//! Its own test binary, so pausing replay never overlaps the other suites.

use std::time::Duration;

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Superuser connections to every replica of the test stack.
async fn replicas() -> Vec<tokio_postgres::Client> {
    let mut out = vec![admin(true).await];
    if let Ok(url) = std::env::var("SWITCHBOARD_REPLICA2_ADMIN_URL") {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("replica 2");
        tokio::spawn(conn);
        out.push(client);
    }
    out
}

/// Runs `sql` on every replica.
async fn on_replicas(sql: &str) {
    for r in replicas().await {
        r.execute(sql, &[]).await.expect(sql);
    }
}

/// Waits until every replica has replayed everything the primary has written so far.
async fn replica_caught_up() {
    let primary = admin(false).await;
    let target: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    for replica in replicas().await {
        eventually(Duration::from_secs(10), || async {
            let row = replica
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await
                .expect("replay lsn");
            row.get::<_, bool>(0).then_some(())
        })
        .await;
    }
}

fn contents(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn reads_come_from_the_replica_and_own_writes_stay_visible_while_replay_is_paused() {
    let _exclusive = exclusive().await;
    let alice = register("alice").await;
    let bob = register("bob").await;
    let conv = alice.direct_with(&bob).await;
    alice.send(&conv, "before pause").await;
    replica_caught_up().await;

    on_replicas("SELECT pg_wal_replay_pause()").await;
    // Run the checks in a task so replay is resumed even if an assertion fails.
    let (a, b, c) = (alice.clone(), bob.clone(), conv.clone());
    let outcome = tokio::spawn(async move { paused_checks(a, b, c).await }).await;
    on_replicas("SELECT pg_wal_replay_resume()").await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }

    // Once replay resumes, the replica serves Bob's message to a reader with no token.
    let path = format!("/api/conversations/{conv}/messages?limit=10");
    let page = eventually(Duration::from_secs(10), || async {
        let (_, page) = alice.get(&path).await;
        contents(&page)
            .contains(&"while paused, from bob".to_owned())
            .then_some(page)
    })
    .await;
    assert_eq!(contents(&page).len(), 3);
}

/// The entry for `conv` in a conversation list page.
fn listed(list: &Value, conv: &str) -> Value {
    list["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == conv)
        .cloned()
        .expect("conversation listed")
}

async fn paused_checks(alice: User, bob: User, conv: String) {
    let path = format!("/api/conversations/{conv}/messages?limit=10");
    // Bob writes while the replica is frozen.
    bob.send(&conv, "while paused, from bob").await;

    // Alice has no token covering Bob's write: her read goes to the replica, which has not
    // replayed it. Seeing the old state proves the replica served the read.
    let (s, page) = alice.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        contents(&page),
        vec!["before pause".to_owned()],
        "history from the replica"
    );
    let (_, list) = alice.get("/api/conversations").await;
    let entry = listed(&list, &conv);
    assert_eq!(entry["last_seq"], 1, "list from the replica: {entry}");

    // Alice's own write answers with a consistency token...
    let (s, headers, sent) = alice
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(serde_json::json!({"content": "mine, while paused"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    let token = headers
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("consistency token header")
        .to_owned();
    let cookie = set_cookie(&headers, "ryw_lsn").expect("ryw_lsn cookie");
    assert!(
        cookie.1.contains("HttpOnly") && cookie.1.contains("Path=/api"),
        "{}",
        cookie.1
    );

    // ...and her next read, carrying it as a browser would (cookie) or as a header, sees it
    // although the replica is still paused: the read fell back to the primary.
    for header in [
        ("x-consistency-token", token.as_str()),
        ("cookie", cookie.0.as_str()),
    ] {
        let (s, _, page) = alice.call_with(Method::GET, &path, None, &[header]).await;
        assert_eq!(s, StatusCode::OK);
        let seen = contents(&page);
        assert!(
            seen.contains(&"mine, while paused".to_owned()),
            "{header:?}: {seen:?}"
        );
    }
    let (_, _, list) = alice
        .call_with(
            Method::GET,
            "/api/conversations",
            None,
            &[("x-consistency-token", &token)],
        )
        .await;
    let entry = listed(&list, &conv);
    assert_eq!(entry["last_seq"], 3, "{entry}");
    assert_eq!(entry["last_message"]["content"], "mine, while paused");

    // The replica really is still behind.
    let replica = admin(true).await;
    let paused: bool = replica
        .query_one("SELECT pg_is_wal_replay_paused()", &[])
        .await
        .expect("state")
        .get(0);
    assert!(paused);
}
