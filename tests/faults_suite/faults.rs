//! Read/write routing under faults, against the real stack with steady concurrent traffic
//! (writers that read their own writes back with their consistency token, and readers): a
//! replica stopped and restarted, replay paused on every replica, the primary stopped, a
//! replica lagging past the threshold. For each case it prints and checks requests, failures
//! by status, stale own-reads and acknowledged-but-lost messages. Also: two replicas share
//! reads, and one that stops is skipped, then taken back.
//! Its own test binary (cargo runs binaries one after another): it stops database servers.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Runs `postgres/setup.sh` on the blocking pool: `pg_ctl -w` waits seconds, and blocking
/// the test's runtime would stall the traffic tasks and count that stall as slow answers.
async fn setup(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = args.clone();
    let status = tokio::task::spawn_blocking(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/postgres/setup.sh");
        std::process::Command::new("bash")
            .arg(script)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await
    .expect("setup task")
    .expect("setup.sh");
    assert!(status.success(), "postgres/setup.sh {shown:?}");
}

async fn replica_admin(n: usize) -> tokio_postgres::Client {
    let var = if n == 1 {
        "SWITCHBOARD_REPLICA_ADMIN_URL"
    } else {
        "SWITCHBOARD_REPLICA2_ADMIN_URL"
    };
    let url = std::env::var(var).expect("set by scripts/test.sh");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("replica");
    tokio::spawn(conn);
    client
}

/// A messaging instance's `/api/readyz` body (`Null` if it is not JSON) at `url`.
pub(crate) async fn readyz(url: &str) -> Value {
    readiness_at(url, "/api/readyz").await.1
}

/// A service's readiness answer at `url` + `path` (`/api/readyz`, `/auth/readyz`): its status
/// and its body (`Null` if it is not JSON).
pub(crate) async fn readiness_at(url: &str, path: &str) -> (u16, Value) {
    let res = http()
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("readyz");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Replica health as each messaging instance reports it: `[(name, healthy)]` per instance.
async fn replica_health() -> Vec<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for (_, url) in instances() {
        let body = readyz(&url).await;
        out.push(
            body["checks"]["replicas"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            (
                                r["name"].as_str().unwrap_or("").to_owned(),
                                r["health"]["healthy"] == true,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    out
}

async fn wait_replica(name: &str, healthy: bool) {
    eventually(Duration::from_secs(30), || async {
        replica_health()
            .await
            .iter()
            .all(|inst| inst.iter().any(|(n, h)| n == name && *h == healthy))
            .then_some(())
    })
    .await;
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    reads_ok: AtomicU64,
    writes_ok: AtomicU64,
    failures: Mutex<BTreeMap<u16, u64>>,
    stale_own_reads: AtomicU64,
    /// Failed writes that took 2 s or more to answer.
    slow_failures: AtomicU64,
    /// 503s without Retry-After.
    no_retry_after: AtomicU64,
    /// Slowest failed write, in milliseconds.
    slowest_failure_ms: AtomicU64,
    acked: Mutex<Vec<String>>,
}

impl Stats {
    fn fail(&self, status: u16) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry(status).or_default() += 1;
        }
    }

    fn failures(&self) -> BTreeMap<u16, u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

struct Pair {
    writer: User,
    conv: String,
}

async fn pairs(n: usize) -> Vec<Pair> {
    let mut out = Vec::new();
    for _ in 0..n {
        let writer = register("writer").await;
        let peer = register("peer").await;
        let conv = writer.direct_with(&peer).await;
        out.push(Pair { writer, conv });
    }
    out
}

/// Runs writers and readers until `stop`; each writer sends, then reads its own message back
/// with the consistency token it got.
fn traffic(
    pairs: &[Pair],
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let (user, conv, stats, stop) = (
            p.writer.clone(),
            p.conv.clone(),
            stats.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let (s, h, body) = user
                    .call(
                        Method::POST,
                        &format!("/api/conversations/{conv}/messages"),
                        Some(json!({"content": format!("w{i} #{n}")})),
                    )
                    .await;
                stats.requests.fetch_add(1, Ordering::Relaxed);
                if s == StatusCode::CREATED {
                    stats.writes_ok.fetch_add(1, Ordering::Relaxed);
                    let id = body["id"].as_str().unwrap_or("").to_owned();
                    if let Ok(mut a) = stats.acked.lock() {
                        a.push(id.clone());
                    }
                    let token = h
                        .get("x-consistency-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let (s, _, page) = user
                        .call_with(
                            Method::GET,
                            &format!("/api/conversations/{conv}/messages?limit=5"),
                            None,
                            &[("x-consistency-token", &token)],
                        )
                        .await;
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    if s == StatusCode::OK {
                        stats.reads_ok.fetch_add(1, Ordering::Relaxed);
                        let seen = page["messages"]
                            .as_array()
                            .is_some_and(|m| m.iter().any(|m| m["id"] == id.as_str()));
                        if !seen {
                            stats.stale_own_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        stats.fail(s.as_u16());
                    }
                } else {
                    stats.fail(s.as_u16());
                    stats
                        .slowest_failure_ms
                        .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if started.elapsed() >= Duration::from_secs(2) {
                        stats.slow_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    if s == StatusCode::SERVICE_UNAVAILABLE && h.get("retry-after").is_none() {
                        stats.no_retry_after.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for p in pairs.iter().take(3) {
        let (user, conv, stats, stop) = (
            p.writer.clone(),
            p.conv.clone(),
            stats.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for path in [
                    "/api/conversations".to_owned(),
                    format!("/api/conversations/{conv}/messages?limit=20"),
                ] {
                    let (s, _) = user.get(&path).await;
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    if s == StatusCode::OK {
                        stats.reads_ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.fail(s.as_u16());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tasks
}

/// Runs one case: traffic for a second, `fault`, traffic for two more seconds; then checks
/// that every acknowledged message is on the primary. Returns the stats and lost count.
async fn case<F, Fut>(name: &str, pairs: &[Pair], fault: F) -> (Arc<Stats>, u64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = traffic(pairs, stats.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    fault().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("traffic task");
    }
    let acked = stats.acked.lock().map(|a| a.clone()).unwrap_or_default();
    let found: i64 = admin(false)
        .await
        .query_one(
            "SELECT count(*) FROM messaging.messages WHERE id::text = ANY($1)",
            &[&acked],
        )
        .await
        .expect("count")
        .get(0);
    let lost = acked.len() as u64 - found as u64;
    println!(
        "{name:<28} requests {:>5}  reads ok {:>5}  writes ok {:>4}  failures {:?}  stale own-reads {}  lost {}  slow failures {}  slowest failure {} ms",
        stats.requests.load(Ordering::Relaxed),
        stats.reads_ok.load(Ordering::Relaxed),
        stats.writes_ok.load(Ordering::Relaxed),
        stats.failures(),
        stats.stale_own_reads.load(Ordering::Relaxed),
        lost,
        stats.slow_failures.load(Ordering::Relaxed),
        stats.slowest_failure_ms.load(Ordering::Relaxed),
    );
    (stats, lost)
}

fn assert_clean(name: &str, stats: &Stats, lost: u64, writes_may_fail: bool) {
    assert_eq!(
        stats.stale_own_reads.load(Ordering::Relaxed),
        0,
        "{name}: stale own-reads"
    );
    assert_eq!(lost, 0, "{name}: acknowledged messages lost");
    let failures = stats.failures();
    assert!(
        failures.keys().all(|s| *s < 500 || *s == 503),
        "{name}: {failures:?}"
    );
    if writes_may_fail {
        assert!(failures.keys().all(|s| *s == 503), "{name}: {failures:?}");
        assert_eq!(
            stats.slow_failures.load(Ordering::Relaxed),
            0,
            "{name}: failures slower than 2 s"
        );
        assert_eq!(
            stats.no_retry_after.load(Ordering::Relaxed),
            0,
            "{name}: 503 without Retry-After"
        );
    } else {
        assert!(failures.is_empty(), "{name}: {failures:?}");
    }
    assert!(
        stats.writes_ok.load(Ordering::Relaxed) > 0 && stats.reads_ok.load(Ordering::Relaxed) > 0
    );
}

#[tokio::test]
async fn no_stale_own_read_and_no_lost_message_through_replica_and_primary_faults() {
    let _exclusive = exclusive().await;
    wait_replica("replica-1", true).await;
    wait_replica("replica-2", true).await;

    let (s, lost) = case("1 replica stopped+started", &pairs(4).await, || async {
        setup(&["stop", "replica1"]).await;
        wait_replica("replica-1", false).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        setup(&["start"]).await;
        wait_replica("replica-1", true).await;
    })
    .await;
    assert_clean("replica stopped", &s, lost, false);

    let (s, lost) = case("2 replay paused 10 s", &pairs(4).await, || async {
        let (r1, r2) = (replica_admin(1).await, replica_admin(2).await);
        for r in [&r1, &r2] {
            r.execute("SELECT pg_wal_replay_pause()", &[])
                .await
                .expect("pause");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        for r in [&r1, &r2] {
            r.execute("SELECT pg_wal_replay_resume()", &[])
                .await
                .expect("resume");
        }
    })
    .await;
    assert_clean("replay paused", &s, lost, false);

    let (s, lost) = case("3 primary stopped 10 s", &pairs(4).await, || async {
        setup(&["stop", "primary"]).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        setup(&["start"]).await;
    })
    .await;
    assert_clean("primary stopped", &s, lost, true);
    assert!(
        s.failures().get(&503).is_some_and(|n| *n > 0),
        "writes failed while the primary was down"
    );

    let (s, lost) = case("4 replica lagging", &pairs(4).await, || async {
        let r1 = replica_admin(1).await;
        r1.execute("SELECT pg_wal_replay_pause()", &[])
            .await
            .expect("pause");
        // Writes go on; replica-1 falls behind past the threshold and is skipped.
        wait_replica("replica-1", false).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        r1.execute("SELECT pg_wal_replay_resume()", &[])
            .await
            .expect("resume");
        wait_replica("replica-1", true).await;
    })
    .await;
    assert_clean("replica lagging", &s, lost, false);
}

/// Scans of messaging.participants on replica `n` (every conversation list reads it; the
/// health monitor does not, so this counts API reads only).
async fn xacts(n: usize) -> i64 {
    let r = replica_admin(n).await;
    r.query_one(
        "SELECT (coalesce(sum(seq_scan), 0) + coalesce(sum(idx_scan), 0))::bigint
         FROM pg_stat_user_tables WHERE schemaname = 'messaging' AND relname = 'participants'",
        &[],
    )
    .await
    .expect("stats")
    .get(0)
}

async fn reads(user: &User, n: usize) {
    for _ in 0..n {
        let (s, _) = user.get("/api/conversations").await;
        assert_eq!(s, StatusCode::OK);
    }
}

#[tokio::test]
async fn reads_are_shared_by_the_replicas_and_a_stopped_one_is_skipped() {
    let _exclusive = exclusive().await;
    let user = register("balance").await;
    wait_replica("replica-1", true).await;
    wait_replica("replica-2", true).await;
    let (a1, a2) = (xacts(1).await, xacts(2).await);
    reads(&user, 40).await;
    // Statistics reach pg_stat_database within a second or so.
    eventually(Duration::from_secs(10), || async {
        (xacts(1).await - a1 >= 10 && xacts(2).await - a2 >= 10).then_some(())
    })
    .await;

    setup(&["stop", "replica2"]).await;
    wait_replica("replica-2", false).await;
    let b1 = xacts(1).await;
    reads(&user, 40).await;
    eventually(Duration::from_secs(10), || async {
        (xacts(1).await - b1 >= 40).then_some(())
    })
    .await;

    setup(&["start"]).await;
    wait_replica("replica-2", true).await;
    let c2 = xacts(2).await;
    reads(&user, 40).await;
    eventually(Duration::from_secs(10), || async {
        (xacts(2).await - c2 >= 10).then_some(())
    })
    .await;
}
