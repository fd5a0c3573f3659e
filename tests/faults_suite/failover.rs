//! Losing a messaging instance: a client whose instance dies reconnects through NGINX to the
//! other and `resume` yields exactly the events it missed; a graceful shutdown closes sockets
//! with 1001. Its own test binary (cargo runs binaries one after another), because it stops
//! instances; it starts each again, with the same environment, before it ends.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn pid_file(name: &str) -> PathBuf {
    let data = std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh");
    PathBuf::from(format!("{data}/pids/{name}.pid"))
}

pub(crate) fn pid_of(name: &str) -> i32 {
    std::fs::read_to_string(pid_file(name))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// The environment the instance was started with (Linux /proc), to start it again alike.
pub(crate) fn environ(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(crate) fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

pub(crate) async fn wait_gone(pid: i32) {
    eventually(WAIT, || async {
        (!PathBuf::from(format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}

/// Starts the instance again with `env`, records its pid, waits until it is ready. The
/// instance outlives this test on purpose (the stack's teardown stops it by its pid file),
/// so it is never waited on.
#[allow(clippy::zombie_processes)]
pub(crate) async fn restart(name: &str, url: &str, env: Vec<(String, String)>) {
    let data = std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{data}/logs/{name}.log"))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_messaging"))
        .env_clear()
        .envs(env)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start instance");
    std::fs::write(pid_file(name), child.id().to_string()).expect("pid file");
    until_ready(&format!("{url}/api/readyz"), Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_dead_instance_loses_no_events_and_a_stopping_one_says_going_away() {
    let _exclusive = exclusive().await;
    let inst = instances();
    assert!(inst.len() >= 2, "two messaging instances: {inst:?}");
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;

    // 1. Crash: SIGKILL the instance holding b's socket, mid-stream.
    let (victim, victim_url) = inst[0].clone();
    let mut ws = socket_on(&b, &victim).await;
    for n in 1..=3 {
        a.send(&conv, &format!("m{n}")).await;
        let e = next_event(&mut ws, "message.created", WAIT).await;
        assert_eq!(e["seq"], n);
    }
    let pid = pid_of(&victim);
    let env = environ(pid);
    signal(pid, "-KILL");
    wait_gone(pid).await;
    let (code, _) = until_closed(&mut ws, WAIT).await;
    assert!(code.is_none() || code == Some(1006), "{code:?}");
    for n in 4..=6 {
        a.send(&conv, &format!("m{n}")).await; // NGINX sends these to the survivor
    }
    // b reconnects (NGINX skips the dead instance) and resumes from the last seq it had.
    let (mut ws, hello) = socket_hello(&b).await;
    assert_ne!(hello["data"]["instance"], victim.as_str());
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {conv.clone(): 3}}),
    )
    .await;
    let mut seqs = Vec::new();
    loop {
        let e = next_of(&mut ws, &["message.created", "resumed"]).await;
        if e["type"] == "resumed" {
            break;
        }
        seqs.push(e["seq"].as_i64().expect("seq"));
    }
    assert_eq!(seqs, vec![4, 5, 6], "exactly the missed events");
    a.send(&conv, "m7").await;
    let e = next_event(&mut ws, "message.created", WAIT).await;
    assert_eq!(e["seq"], 7, "then live, no gap, no duplicate");
    restart(&victim, &victim_url, env).await;

    // 2. Graceful stop: SIGTERM closes every socket of the instance with 1001.
    let (stopping, stopping_url) = inst[1].clone();
    let mut ws = socket_on(&b, &stopping).await;
    let pid = pid_of(&stopping);
    let env = environ(pid);
    signal(pid, "-TERM");
    let (code, _) = until_closed(&mut ws, WAIT).await;
    assert_eq!(code, Some(1001));
    wait_gone(pid).await;
    restart(&stopping, &stopping_url, env).await;
}

async fn next_of(ws: &mut Ws, kinds: &[&str]) -> serde_json::Value {
    loop {
        let frame = next_frame(ws).await;
        if kinds.iter().any(|k| frame["type"] == *k) {
            return frame;
        }
    }
}
