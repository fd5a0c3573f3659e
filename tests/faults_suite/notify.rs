//! Notifications through restarts (issue 19): every messaging instance and the auth service
//! restarted while mentions wait in the queue and pushes are being sent — afterwards each
//! message was pushed exactly once (the test push service counts) and is in the feed once.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use super::failover::{environ, pid_of, restart, signal};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const MESSAGES: usize = 12;
/// How long the push service takes per push: 12 of them keep one pass busy for 3 s.
const PUSH_ANSWER_DELAY: Duration = Duration::from_millis(250);

#[tokio::test]
async fn restarting_every_service_mid_way_loses_no_push_and_sends_none_twice() {
    let _exclusive = exclusive().await;
    let (alice, bob) = (register("rs_a").await, register("rs_b").await);
    let conversation = alice.direct_with(&bob).await;
    let (browser, subscription) = browser_subscription().await;
    let (s, body) = bob.post("/api/push/subscriptions", subscription).await;
    assert_eq!(s.as_u16(), 201, "{body}");
    // A slow push service: the sender's pass over these messages is still under way when
    // the instances stop (their HTTP workers, and the connections those made, go first).
    push_service_answers(&browser, 201, PUSH_ANSWER_DELAY).await;

    // Busy pools first: concurrent writes make each instance's HTTP workers open primary
    // connections of their own, which the sender's pass may then be handed (it was, in a
    // CI run, and lost them mid-pass when the workers stopped).
    let first = bob.send(&conversation, "hello").await;
    let read = format!("/api/messages/{}/read", first["id"].as_str().expect("id"));
    let marks = futures_util::future::join_all((0..48).map(|_| alice.post(&read, json!({})))).await;
    assert!(marks.iter().all(|(s, _)| s.is_success()), "{marks:?}");

    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        let m = alice
            .send(&conversation, &format!("@{} number {n}", bob.username))
            .await;
        sent.push(m["id"].as_str().expect("id").to_owned());
    }
    eventually(WAIT, || async {
        let pushed = seen(&browser).await["received"].as_array()?.len();
        (pushed >= 1).then_some(())
    })
    .await;
    // Mid-way: the sender is busy with these (some pushed, some not yet). Each instance
    // stops (TERM, as an orchestrator does), and so does auth; all start again alike.
    let mut stopped = Vec::new();
    for (name, url) in instances() {
        let pid = pid_of(&name);
        stopped.push((name.clone(), url, environ(pid), pid));
        signal(pid, "-TERM");
    }
    let auth_pid = pid_of("auth");
    let auth_env = environ(auth_pid);
    signal(auth_pid, "-TERM");
    for (_, _, _, pid) in &stopped {
        exited(*pid).await;
    }
    exited(auth_pid).await;
    // One more while everything is down would be refused (503 from NGINX): not counted.
    for (name, url, env, _) in stopped {
        restart(&name, &url, env).await;
    }
    restart_auth(auth_env).await;

    // Every message pushed exactly once, and in the feed exactly once.
    let counts: HashMap<String, usize> = eventually(WAIT, || async {
        let s = seen(&browser).await;
        assert_eq!(s["refused"], json!([]), "{s}");
        let mut counts = HashMap::new();
        for push in s["received"].as_array()? {
            let id = push["payload"]["message_id"].as_str()?.to_owned();
            *counts.entry(id).or_insert(0) += 1;
        }
        (counts.len() >= MESSAGES).then_some(counts)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = seen(&browser).await;
    assert_eq!(
        s["received"].as_array().map(Vec::len),
        Some(MESSAGES),
        "no push twice: {counts:?}"
    );
    for id in &sent {
        assert_eq!(counts.get(id), Some(&1), "message {id}: {counts:?}");
    }
    let (_, feed) = bob.get("/api/notifications?limit=100").await;
    let entries: Vec<&str> = feed["notifications"]
        .as_array()
        .expect("feed")
        .iter()
        .filter_map(|n| n["message_id"].as_str())
        .collect();
    assert_eq!(entries.len(), MESSAGES, "{feed}");
    for id in &sent {
        assert_eq!(
            entries.iter().filter(|e| **e == id).count(),
            1,
            "{id} in {feed}"
        );
    }
}

/// Waits for `pid` to exit: a graceful stop may take its HTTP shutdown timeout (10 s) and
/// the background tasks' grace on top, within Kubernetes' default 30 s. An instance an
/// earlier test restarted is this process's child: once it exits it stays a zombie (`Z`)
/// until reaped, which counts as exited.
pub(crate) async fn exited(pid: i32) {
    eventually(Duration::from_secs(40), || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, None | Some('Z') | Some('X')).then_some(())
    })
    .await;
}

/// Starts auth again with `env` (its pid file updated), waits until it is ready.
#[allow(clippy::zombie_processes)]
pub(crate) async fn restart_auth(env: Vec<(String, String)>) {
    let data = std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{data}/logs/auth.log"))
        .expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start auth");
    std::fs::write(format!("{data}/pids/auth.pid"), child.id().to_string()).expect("pid file");
    let bind = env
        .iter()
        .find(|(k, _)| k == "AUTH_BIND")
        .map(|(_, v)| v.clone())
        .expect("AUTH_BIND");
    until_ready(&format!("http://{bind}/auth/readyz"), WAIT).await;
}
