//! A service's whole life in-process: `App::build_messaging` on free ports against the test
//! stack's databases, used (HTTP, a socket, metrics), then stopped with its stop token as
//! SIGTERM would. It proves the background tasks are owned, not forgotten: after the stop,
//! every database connection the instance opened (pools, LISTEN, publisher) is gone, its
//! ports are closed, its socket got 1001 and its presence rows are gone.

use std::{collections::HashSet, time::Duration};

use crate::common::*;
use reqwest::StatusCode;
use switchboard::{platform::config, startup::App};

/// Presence rows (open sockets) recorded for `instance` on the primary.
async fn presence_rows(primary_admin: &tokio_postgres::Client, instance: &str) -> i64 {
    primary_admin
        .query_one(
            "SELECT count(*) FROM messaging.presence_sockets WHERE instance_id = $1",
            &[&instance],
        )
        .await
        .expect("presence")
        .get(0)
}

/// How many of `users` are online on the primary.
async fn online_users(primary_admin: &tokio_postgres::Client, users: &[uuid::Uuid]) -> i64 {
    primary_admin
        .query_one(
            "SELECT count(*) FILTER (WHERE online) FROM messaging.presence WHERE user_id = ANY($1)",
            &[&users],
        )
        .await
        .expect("presence")
        .get(0)
}

/// Backends of one messaging instance (each connection it opens is named
/// `switchboard-<role> <instance>`).
async fn backends_of(admin: &tokio_postgres::Client, instance: &str) -> HashSet<(i32, String)> {
    admin
        .query(
            "SELECT pid, application_name FROM pg_stat_activity
              WHERE application_name LIKE 'switchboard-% ' || $1",
            &[&instance],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn with_port(url: &str, from: &str, to: &str) -> String {
    url.replace(&format!(":{from}/"), &format!(":{to}/"))
}

/// Waits for an in-process instance, whose stop token was cancelled, to stop cleanly
/// (within 20 s).
async fn stopped(running: tokio::task::JoinHandle<anyhow::Result<()>>) {
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("stops within 20 s")
        .expect("task")
        .expect("stops cleanly");
}

/// A messaging instance built in-process on free ports against the test stack's databases,
/// named `instance`, with `extra` flags.
async fn in_process_messaging(instance: &str, extra: &[&str]) -> App {
    let primary_url = std::env::var("SWITCHBOARD_MESSAGING_DB_URL").expect("test.sh sets it");
    let (pp, rp) = (
        std::env::var("PG_PRIMARY_PORT").expect("test.sh sets it"),
        std::env::var("PG_REPLICA_PORT").expect("test.sh sets it"),
    );
    let mut args = vec![
        "messaging".to_owned(),
        "--bind=127.0.0.1:0".into(),
        "--metrics-bind=127.0.0.1:0".into(),
        format!("--instance-id={instance}"),
        format!("--database-url={primary_url}"),
        format!("--replica-url={}", with_port(&primary_url, &pp, &rp)),
        format!("--jwks-url={}/auth/.well-known/jwks.json", base()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let cfg: config::MessagingConfig = config::try_parse_from(args).expect("flags parse");
    App::build_messaging(cfg.resolve().expect("settings resolve"))
        .await
        .expect("app builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_built_in_process_serves_then_stops_every_task_it_started() {
    let _alone = exclusive().await;
    let primary_admin = admin(false).await;
    let replica_admin = admin(true).await;

    let instance = format!("inproc-{}", unique());
    let app = in_process_messaging(&instance, &[]).await;
    let (port, metrics_port, stop) = (app.port(), app.metrics_port(), app.stop_token());
    assert_ne!(port, 0);
    let running = tokio::spawn(app.run_until_stopped());
    let server = format!("http://127.0.0.1:{port}");

    // It serves: the API with a token from the real auth service, a socket, metrics.
    let user = register("inproc").await;
    let r = http()
        .get(format!("{server}/api/conversations"))
        .bearer_auth(&user.access)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let mut ws = socket_at(&user, &server).await;
    let hello = next_event(&mut ws, "hello", Duration::from_secs(5)).await;
    assert_eq!(hello["data"]["instance"], instance.as_str());
    let r = http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    eventually(Duration::from_secs(10), || async {
        let ours = backends_of(&primary_admin, &instance).await;
        let named = |role: &str| ours.iter().any(|(_, n)| n.starts_with(role));
        let on_replica = !backends_of(&replica_admin, &instance).await.is_empty();
        (named("switchboard-listener ")
            && named("switchboard-publisher ")
            && named("switchboard-messaging ")
            && named("switchboard-monitor ")
            && on_replica)
            .then_some(())
    })
    .await;
    let rows = presence_rows(&primary_admin, &instance).await;
    assert_eq!(rows, 1, "the socket is recorded");

    // Stopped as SIGTERM would stop it.
    stop.cancel();
    let (code, _) = until_closed(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(code, Some(1001), "sockets are told to go elsewhere");
    stopped(running).await;

    let rows = presence_rows(&primary_admin, &instance).await;
    assert_eq!(rows, 0, "its presence rows are gone");
    eventually(Duration::from_secs(5), || async {
        let left = backends_of(&primary_admin, &instance).await.len()
            + backends_of(&replica_admin, &instance).await.len();
        (left == 0).then_some(())
    })
    .await;
    for p in [port, metrics_port] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .is_err(),
            "port {p} still accepts connections"
        );
    }
}

/// Presence through a socket storm: 240 sockets of 24 users, on an instance whose database
/// pool has two connections and lets a caller wait 5 ms for one, all closed at once (a
/// deploy, a network blip: 10 000 sockets closing in the benchmark left thousands of
/// presence rows behind at the real pool's 16 and 800 ms). Every socket is recorded while it
/// is open; once they close none is left behind (a left-over row keeps its user online for as
/// long as the instance lives) and every user is offline after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_storm_leaves_no_presence_behind_with_a_busy_pool() {
    let _alone = exclusive().await;
    let primary_admin = admin(false).await;
    let instance = format!("storm-{}", unique());
    let app =
        in_process_messaging(&instance, &["--db-pool-size=2", "--db-pool-timeout-ms=5"]).await;
    let (port, stop) = (app.port(), app.stop_token());
    let running = tokio::spawn(app.run_until_stopped());
    let server = format!("http://127.0.0.1:{port}");

    let users = futures_util::future::join_all((0..24).map(|_| register("storm"))).await;
    let mut sockets = Vec::new();
    for user in &users {
        for _ in 0..10 {
            let mut ws = socket_at(user, &server).await;
            next_event(&mut ws, "hello", Duration::from_secs(10)).await;
            sockets.push(ws);
        }
    }
    eventually(Duration::from_secs(10), || async {
        (presence_rows(&primary_admin, &instance).await == 240).then_some(())
    })
    .await;
    let ids: Vec<uuid::Uuid> = users
        .iter()
        .map(|u| u.id.parse().expect("user id"))
        .collect();
    assert_eq!(
        online_users(&primary_admin, &ids).await,
        24,
        "every user is online"
    );

    // All at once.
    futures_util::future::join_all(sockets.iter_mut().map(|ws| ws.close(None))).await;
    drop(sockets);
    eventually(Duration::from_secs(10), || async {
        (presence_rows(&primary_admin, &instance).await == 0).then_some(())
    })
    .await;
    // Grace (PRESENCE_GRACE_SECS, 1 s in the tests), then each user's own check.
    eventually(Duration::from_secs(10), || async {
        (online_users(&primary_admin, &ids).await == 0).then_some(())
    })
    .await;

    stop.cancel();
    stopped(running).await;
}

/// What a crash leaves behind is swept. An instance killed while a user's socket was open on
/// it leaves its heartbeat a minute old, the socket's row, and the user online since before
/// the grace period; no departure check runs for that socket. Within two sweep periods (the
/// cluster sweeps once a period, by whichever live instance's turn it is) the user is
/// offline, with `last_seen_at` set, and the dead instance's socket rows are gone. (The
/// suite's own instances sweep too: this proves someone sweeps, not that only one does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instances_users_go_offline_at_a_sweep() {
    let _alone = exclusive().await;
    let primary_admin = admin(false).await;
    let dead = format!("crashed-{}", unique());
    let user = register("crashed").await;
    let id: uuid::Uuid = user.id.parse().expect("user id");
    primary_admin
        .execute(
            "INSERT INTO messaging.instances (id, heartbeat_at) VALUES ($1, now() - interval '60 s')",
            &[&dead],
        )
        .await
        .expect("dead instance");
    primary_admin
        .execute(
            "INSERT INTO messaging.presence_sockets (instance_id, conn_id, user_id)
             VALUES ($1, 1, $2)",
            &[&dead, &id],
        )
        .await
        .expect("its socket");
    primary_admin
        .execute(
            "INSERT INTO messaging.presence (user_id, online, changed_at)
             VALUES ($1, true, now() - interval '60 s')",
            &[&id],
        )
        .await
        .expect("online");

    // A live instance of its own, so that a sweeper runs whatever else is up.
    let app = in_process_messaging(&format!("sweeper-{}", unique()), &[]).await;
    let stop = app.stop_token();
    let running = tokio::spawn(app.run_until_stopped());
    // Two periods of 10 s at most between sweeps, and the last may have been just before.
    eventually(Duration::from_secs(25), || async {
        (online_users(&primary_admin, &[id]).await == 0
            && presence_rows(&primary_admin, &dead).await == 0)
            .then_some(())
    })
    .await;
    let seen: Option<chrono::DateTime<chrono::Utc>> = primary_admin
        .query_one(
            "SELECT last_seen_at FROM messaging.presence WHERE user_id = $1",
            &[&id],
        )
        .await
        .expect("presence")
        .get(0);
    assert!(seen.is_some(), "an offline user has a last seen time");
    primary_admin
        .execute("DELETE FROM messaging.instances WHERE id = $1", &[&dead])
        .await
        .expect("forget the dead instance");
    stop.cancel();
    stopped(running).await;
}

/// What an instance's `/api/readyz` says: whether the primary answered, and whether its
/// one replica is healthy.
async fn readiness(server: &str) -> (bool, bool) {
    let body = crate::faults::readyz(server).await;
    (
        body["checks"]["primary"] == true,
        body["checks"]["replicas"][0]["health"]["healthy"] == true,
    )
}

/// A busy pool is not a sick server. An instance with one connection per pool reads
/// history from the replica while the primary holds an ACCESS EXCLUSIVE lock on the
/// messages (replayed on the standby, PostgreSQL docs §27.4.4, "Hot Standby": the read waits
/// for it, holding the instance's only replica connection), and sends one (its batch waits
/// for the lock holding the only primary connection; both backends are seen waiting on a
/// lock). For 2.5 s — five health checks — the replica stays healthy and the primary ready
/// on `/api/readyz`: the monitor and
/// the readiness check ask on connections of their own. (When both took a connection from
/// the requests' pool, the first check marked the replica unhealthy, which moves reads to
/// the primary, and readyz said the primary was down: a storm that fills a pool would shift
/// its reads onto the writer and take the instance out of its Service.) The read and the
/// send then complete once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_pool_held_by_a_blocked_read_is_not_an_unhealthy_replica() {
    let _alone = exclusive().await;
    let (primary_admin, replica_admin) = (admin(false).await, admin(true).await);
    let instance = format!("busy-pool-{}", unique());
    let app = in_process_messaging(
        &instance,
        &[
            "--db-pool-size=1",
            "--db-pool-timeout-ms=4000",
            "--replica-check-interval-ms=500",
        ],
    )
    .await;
    let (port, stop) = (app.port(), app.stop_token());
    let running = tokio::spawn(app.run_until_stopped());
    let server = format!("http://127.0.0.1:{port}");
    let (a, b) = (register("busy_a").await, register("busy_b").await);
    let conv = a.direct_with(&b).await;
    eventually(Duration::from_secs(10), || async {
        (readiness(&server).await == (true, true)).then_some(())
    })
    .await;

    primary_admin
        .batch_execute("BEGIN; LOCK TABLE messaging.messages IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock on the primary");
    eventually(Duration::from_secs(10), || async {
        let held: i64 = replica_admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'relation'
                   AND mode = 'AccessExclusiveLock'
                   AND relation = 'messaging.messages'::regclass",
                &[],
            )
            .await
            .expect("pg_locks")
            .get(0);
        (held > 0).then_some(())
    })
    .await;
    // A read, held on the replica; a send, held on the primary (its batch appends to the
    // messages): each holds its pool's only connection.
    let url = format!("{server}/api/conversations/{conv}/messages");
    let read = in_flight(http().get(&url).bearer_auth(&a.access));
    let send = in_flight(
        http()
            .post(&url)
            .bearer_auth(&a.access)
            .json(&serde_json::json!({"content": "held"})),
    );
    // This instance's backends waiting on a lock, on the replica or the primary.
    let waiting = |on_replica: bool| {
        let instance = instance.clone();
        async move {
            let client = admin(on_replica).await;
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE application_name = 'switchboard-messaging ' || $1
                        AND wait_event_type = 'Lock'",
                    &[&instance],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
        }
    };
    eventually(Duration::from_secs(10), || async {
        (waiting(true).await > 0 && waiting(false).await > 0).then_some(())
    })
    .await;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            readiness(&server).await,
            (true, true),
            "with the pools held, readyz says (primary up, replica healthy)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !read.is_finished() && !send.is_finished(),
        "the read or the send was not held by the lock: a pool was not busy throughout"
    );

    primary_admin
        .batch_execute("ROLLBACK")
        .await
        .expect("unlock");
    for (held, expected) in [(read, StatusCode::OK), (send, StatusCode::CREATED)] {
        let status = tokio::time::timeout(Duration::from_secs(10), held)
            .await
            .expect("answered once the lock is gone")
            .expect("task")
            .expect("answer");
        assert_eq!(status, expected);
    }

    stop.cancel();
    stopped(running).await;
}

/// Sends `request` in a task of its own, to be held by a lock while the test looks on: its
/// status once answered.
fn in_flight(
    request: reqwest::RequestBuilder,
) -> tokio::task::JoinHandle<Result<StatusCode, reqwest::Error>> {
    tokio::spawn(async move { request.send().await.map(|r| r.status()) })
}

/// The same for auth, which has only a primary: an in-process auth service with one
/// request connection, held by a sign-in that waits on an ACCESS EXCLUSIVE lock on
/// `auth.users`. For 2.5 s `/auth/readyz` answers 200 within its probe's second, the primary
/// up: it asks on a connection of its own. (Asked through the request pool, it waited for a
/// connection and answered 503 — in Kubernetes a storm of sign-ins that fills every auth
/// pod's pool would take them all out of their Service, and auth would be down for everyone
/// until the storm passed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_pool_held_by_a_blocked_sign_in_is_not_a_primary_down() {
    let _alone = exclusive().await;
    let primary_admin = admin(false).await;
    let user = register("busy_auth").await;
    // The sign-in below stays blocked for 3 s or more: no statement timeout ends it first.
    let (server, stop) = in_process_auth(&[
        "--db-pool-size=1",
        "--db-pool-timeout-ms=4000",
        "--db-statement-timeout-ms=30000",
    ])
    .await;
    // As a probe asks: an answer within its 1 s (status 0: none came).
    let ready = |server: String| async move {
        tokio::time::timeout(
            Duration::from_secs(1),
            crate::faults::readiness_at(&server, "/auth/readyz"),
        )
        .await
        .unwrap_or((0, serde_json::Value::Null))
    };
    eventually(Duration::from_secs(10), || async {
        (ready(server.clone()).await.0 == 200).then_some(())
    })
    .await;
    // Auth backends already waiting on a lock (none, but the stack's own auth shares the
    // application name): the sign-in's is the one that appears after.
    let lock_waiters = || async {
        primary_admin
            .query_one(
                "SELECT coalesce(array_agg(a.pid), '{}') FROM pg_locks l
                   JOIN pg_stat_activity a USING (pid)
                  WHERE NOT l.granted AND l.relation = 'auth.users'::regclass
                    AND a.application_name = 'switchboard-auth'",
                &[],
            )
            .await
            .expect("pg_locks")
            .get::<_, Vec<i32>>(0)
    };

    primary_admin
        .batch_execute("BEGIN; LOCK TABLE auth.users IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock on the primary");
    let before = lock_waiters().await;
    let sign_in = in_flight(
        http()
            .post(format!("{server}/auth/login"))
            .json(&serde_json::json!({"login": user.username, "password": user.password})),
    );
    // The sign-in's backend waiting on the lock.
    eventually(Duration::from_secs(10), || async {
        let now = lock_waiters().await;
        now.iter().any(|pid| !before.contains(pid)).then_some(())
    })
    .await;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let (status, body) = ready(server.clone()).await;
        assert_eq!(
            (status, body["checks"]["primary"].clone()),
            (200, serde_json::Value::Bool(true)),
            "with the request pool held, readyz says the primary is up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !sign_in.is_finished(),
        "the sign-in was not held by the lock: the pool was not busy throughout"
    );

    primary_admin
        .batch_execute("ROLLBACK")
        .await
        .expect("unlock");
    let status = tokio::time::timeout(Duration::from_secs(10), sign_in)
        .await
        .expect("answered once the lock is gone")
        .expect("task")
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    stop.cancel();
}

/// Admission control by capacity: an instance whose send queue holds one send and whose one
/// writer appends one at a time, hit by 80 sends at once, refuses the excess at once — 503
/// with `Retry-After`, within 250 ms of reaching the instance — and every send it accepted
/// is stored, in a gapless `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_send_queue_refuses_fast_and_loses_nothing_it_accepted() {
    let _alone = exclusive().await;
    send_burst(
        "queue",
        (1, 80, WAVE_GAP),
        None,
        &[
            "--send-queue-capacity=1",
            "--send-writers=1",
            "--send-batch-max=1",
        ],
    )
    .await;
}

/// Admission control by queueing delay: with room in the queue for every send of eight
/// waves of forty, 50 ms apart, but an allowed wait (1 ms) shorter than one append (one send
/// per batch), the sends left waiting through whole appends for longer than CoDel's 100 ms
/// interval cut the number of sends the instance accepts at once (to at most half of those
/// held, once per window) until later waves are partly refused at once, and every accepted
/// send is stored, in a gapless `seq`. (Without the delay rule nothing here is refused: the
/// 320 sends never fill the queue's 1000.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_waiting_past_the_target_shrink_admission_and_lose_nothing() {
    let _alone = exclusive().await;
    send_burst(
        "delay",
        (8, 40, WAVE_GAP),
        None,
        &[
            "--send-queue-capacity=1000",
            "--send-queue-max-wait-ms=1",
            "--send-rate-limit=100000",
            "--send-writers=1",
            "--send-batch-max=1",
        ],
    )
    .await;
}

/// Admission control counts the wait before the handler (src/platform/queue_time.rs): the
/// same eight waves of ten sends 50 ms apart — a load the release default allowed wait
/// (20 ms, set here: the test stack's is longer) never refuses — the first wave stamped by "the edge" as it is sent (so the instance
/// learns the edge's clock offset as zero), the others as having arrived 300 ms before they
/// were sent, are partly refused at once once their waits have stood past the target for
/// CoDel's 100 ms and cut the limit below a wave, and every accepted send is stored, in a
/// gapless `seq`. (Without the stamp nothing is
/// refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_waited_before_its_handler_counts_toward_its_queueing_delay() {
    let _alone = exclusive().await;
    send_burst(
        "edge-wait",
        (8, 10, WAVE_GAP),
        Some(Duration::from_millis(300)),
        &[
            "--send-queue-capacity=40",
            "--send-rate-limit=100000",
            "--send-queue-max-wait-ms=20",
        ],
    )
    .await;
}

/// Admission control counts the wait behind a batch grown by the queue: with every send
/// fitting the next batch (`--send-batch-max=6000`) and the queue (6000), so that no send
/// ever misses a batch, waves of twenty sends 5 ms apart, each append held 0.5 ms by a
/// trigger (four sends arrive per millisecond, two are appended; without the trigger a fast
/// machine's debug build kept up once, and nothing was refused), make each batch bigger and
/// slower than the one before; the sends waiting behind them, past the allowed 1 ms (less
/// the commit before) for CoDel's 100 ms, cut the instance's limit until later sends are
/// refused at once, and every accepted send is stored, in a gapless `seq`. Waves go on until
/// a send is refused, for at most 1.5 s (300 waves, all of which the queue holds): in a fixed
/// 400 ms burst, a CI run whose commits were slow took too few batches for the rule to act
/// before the last send arrived, and nothing was refused (replayed here with every commit
/// held 100 ms, `commit_delay`; as at 1 ms per append on a fast machine). (When the delay
/// counted only a wait from before the batch before was taken, nothing here was refused: no
/// send waited that long. With the delay rule off — a 100 s target — admission control
/// refused nothing: the sends piled into batches that outlasted the 5 s statement timeout,
/// and those refused took 5 s and more.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_waiting_behind_growing_batches_shrink_admission_and_lose_nothing() {
    let _alone = exclusive().await;
    with_slow_appends(
        "batch-wait ",
        BATCH_WAIT_APPEND,
        send_burst(
            "batch-wait",
            (300, 20, Duration::from_millis(5)),
            None,
            &[
                "--send-queue-capacity=6000",
                "--send-queue-max-wait-ms=1",
                "--send-rate-limit=100000",
                "--send-writers=1",
                "--send-batch-max=6000",
            ],
        ),
    )
    .await;
}

/// A slow disk is not a queue: with every commit of the instance's role held 100 ms
/// before its WAL flush (`commit_delay`, PostgreSQL docs §20.5.1 — a disk that stalls), eight
/// clients sending one message after another never queue beyond one batch, and admission
/// control with a 50 ms target (room for a loaded debug build's statements, still under the
/// 100 ms commit) refuses none of them, though each may wait over 100 ms for the batch
/// before its own. The wait behind a batch's commit is the disk's, not the
/// queue's; refusing would not shorten it. (Counting the whole wait, every batch would have
/// stood past the target and the sends been cut to a few at once.) All 64 are stored,
/// gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_is_not_a_queue_and_refuses_no_one() {
    let _alone = exclusive().await;
    let primary_admin = admin(false).await;
    // The service's role: the user of its database URL (postgres://user:password@…).
    let url = std::env::var("SWITCHBOARD_MESSAGING_DB_URL").expect("test.sh sets it");
    let role = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split([':', '@']).next())
        .expect("a user in the database URL")
        .to_owned();
    let (a, b) = (register("slow_disk_a").await, register("slow_disk_b").await);
    let conv = a.direct_with(&b).await;
    let slow = format!(
        "ALTER ROLE \"{role}\" SET commit_delay = 100000;
         ALTER ROLE \"{role}\" SET commit_siblings = 0"
    );
    primary_admin
        .batch_execute(&slow)
        .await
        .expect("slow commits");
    // Sessions started from now on commit slowly: the instance's pools open theirs on first
    // use. (A session another instance of the stack opens meanwhile commits slowly for its
    // life: slower, never wrong.) In a task of its own, so that a panic in it cannot skip
    // the reset below.
    let (url, token) = (
        format!("/api/conversations/{conv}/messages"),
        a.access.clone(),
    );
    let slowly = tokio::spawn(async move {
        let app = in_process_messaging(
            &format!("slow-disk-{}", unique()),
            &["--send-rate-limit=100000", "--send-queue-max-wait-ms=50"],
        )
        .await;
        let (port, stop) = (app.port(), app.stop_token());
        let running = tokio::spawn(app.run_until_stopped());
        let url = format!("http://127.0.0.1:{port}{url}");
        let client = http();
        let answers = futures_util::future::join_all((0..8).map(|c| {
            let (client, url, token) = (&client, &url, &token);
            async move {
                let mut out = Vec::new();
                for n in 0..8 {
                    let started = std::time::Instant::now();
                    let status = client
                        .post(url)
                        .bearer_auth(token)
                        .json(&serde_json::json!({"content": format!("c{c} m{n}")}))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    out.push((status, started.elapsed()));
                }
                out
            }
        }))
        .await;
        stop.cancel();
        stopped(running).await;
        answers
    })
    .await;
    primary_admin
        .batch_execute(&format!(
            "ALTER ROLE \"{role}\" RESET commit_delay; ALTER ROLE \"{role}\" RESET commit_siblings"
        ))
        .await
        .expect("commits as before");
    let answers: Vec<_> = match slowly {
        Ok(answers) => answers.into_iter().flatten().collect(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // Every send waits at least for its own batch's delayed commit.
    let fastest = answers.iter().map(|(_, t)| *t).min().unwrap_or_default();
    assert!(
        fastest >= Duration::from_millis(100),
        "a send was answered in {fastest:?}: commits were not slow, the test proves nothing; answers (status, time): {answers:?}"
    );
    let refused = answers.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(refused, 0, "sends refused behind slow commits: {answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201),
        "every send created: {answers:?}"
    );
    assert_eq!(stored_seqs(&conv).await, (1..=64).collect::<Vec<i64>>());
}

/// One user cannot take an instance's sends from everyone else: with room for eight sends at
/// once (no cut: the delay target is far away), one writer appending one send at a time and
/// each of the flooder's appends held 100 ms (a trigger sleeping in the insert of its
/// messages), sixteen clients of one account sending again as soon as they are answered
/// hold at most half the room — the rest refused fast, 503 with `Retry-After` — and another
/// user's send made meanwhile is accepted. Exactly the accepted sends are stored, gapless in each
/// conversation. (With one limit for everyone, the flood held all eight places and the other
/// user was refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_flooding_sends_cannot_take_every_place_in_the_queue() {
    let _alone = exclusive().await;
    let (flooder, other, peer) = (
        register("flood_a").await,
        register("flood_b").await,
        register("flood_c").await,
    );
    let (flooded, calm) = (
        flooder.direct_with(&peer).await,
        other.direct_with(&peer).await,
    );
    let (calm_send, flood) = with_slow_appends(
        "slow-append ",
        FLOOD_APPEND,
        flood_while_another_sends(
            (flooder.access.clone(), flooded.clone()),
            (other.access.clone(), calm.clone()),
        ),
    )
    .await;

    let (status, _, body, _) = calm_send;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another user's send refused during a flood: {body}"
    );
    let mut accepted = Vec::new();
    let refused = flood.len() - flood.iter().filter(|a| a.0 == StatusCode::CREATED).count();
    for (status, retry_after, body, took) in flood {
        match status {
            StatusCode::CREATED => accepted.push(body["seq"].as_i64().expect("seq")),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "503 without Retry-After: {body}");
                assert!(took < Duration::from_millis(500), "a refusal took {took:?}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "the flood was not partly accepted and partly refused: {} accepted, {refused} refused",
        accepted.len()
    );
    accepted.sort_unstable();
    assert_eq!(stored_seqs(&flooded).await, accepted);
    assert_eq!(
        accepted,
        (1..=accepted.len() as i64).collect::<Vec<_>>(),
        "gapless"
    );
    assert_eq!(stored_seqs(&calm).await, vec![1]);
}

/// A send's answer: its status, whether it carried `Retry-After`, its body and how long it
/// took.
type Answer = (StatusCode, bool, serde_json::Value, Duration);

/// Through an in-process instance with room for eight sends at once (no delay cut), one
/// writer and one send per batch: sixteen clients of `flooder` (token, conversation) each
/// send `slow-append …` messages again as soon as they are answered (50 ms after a
/// refusal); 300 ms in, `other` sends one message. The other's answer, and every flood
/// answer.
async fn flood_while_another_sends(
    (flooder, flooded): (String, String),
    (other, calm): (String, String),
) -> (Answer, Vec<Answer>) {
    let app = in_process_messaging(
        &format!("flood-{}", unique()),
        &[
            "--send-rate-limit=100000",
            "--send-queue-capacity=8",
            "--send-queue-max-wait-ms=60000",
            "--send-writers=1",
            "--send-batch-max=1",
        ],
    )
    .await;
    let (port, stop) = (app.port(), app.stop_token());
    let running = tokio::spawn(app.run_until_stopped());
    let server = format!("http://127.0.0.1:{port}");
    let client = http();
    let send = move |token: String, conv: String, content: String| {
        let (client, server) = (client.clone(), server.clone());
        async move {
            let started = std::time::Instant::now();
            let r = client
                .post(format!("{server}/api/conversations/{conv}/messages"))
                .bearer_auth(token)
                .json(&serde_json::json!({ "content": content }))
                .send()
                .await
                .expect("an answer");
            let (status, retry_after) = (r.status(), r.headers().contains_key("retry-after"));
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, retry_after, body, started.elapsed())
        }
    };
    let flooding = tokio_util::sync::CancellationToken::new();
    let flood = futures_util::future::join_all((0..16).map(|c| {
        let (send, token, conv, flooding) = (
            send.clone(),
            flooder.clone(),
            flooded.clone(),
            flooding.clone(),
        );
        async move {
            let mut answers = Vec::new();
            for n in 0.. {
                if flooding.is_cancelled() {
                    break;
                }
                let answer =
                    send(token.clone(), conv.clone(), format!("slow-append {c} {n}")).await;
                if answer.0 == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answers.push(answer);
            }
            answers
        }
    }));
    // The flood's appends are under way (each held 100 ms) and its clients fill the queue.
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = send(other, calm, "meanwhile".into()).await;
        flooding.cancel();
        answer
    };
    let (flood, calm_send) = tokio::join!(flood, meanwhile);
    stop.cancel();
    stopped(running).await;
    (calm_send, flood.into_iter().flatten().collect())
}

/// How much longer each of the flooder's appends takes in
/// `one_user_flooding_sends_cannot_take_every_place_in_the_queue`.
const FLOOD_APPEND: Duration = Duration::from_millis(100);

/// How much longer each append of a send in
/// `sends_waiting_behind_growing_batches_shrink_admission_and_lose_nothing` takes: four sends
/// arrive per millisecond and two are appended, so on any machine a batch takes longer than
/// the sends queued behind it took to arrive.
const BATCH_WAIT_APPEND: Duration = Duration::from_micros(500);

/// Runs `run` while the append of every message whose content starts with `prefix` takes
/// `each` more (a trigger sleeping in its insert, once per row: a batch of n such sends takes
/// n × `each` longer), and removes the trigger afterwards — also when `run` panics (it runs
/// in a task of its own; the panic is raised again once the trigger is gone). `prefix` is
/// pasted into the SQL: plain text, no quotes and no `LIKE` wildcards.
async fn with_slow_appends<T: Send + 'static>(
    prefix: &str,
    each: Duration,
    run: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let admin = admin(false).await;
    admin
        .batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION public.test_slow_append() RETURNS trigger
               LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({secs}); RETURN NEW; END $$;
             DROP TRIGGER IF EXISTS test_slow_append ON messaging.messages;
             CREATE TRIGGER test_slow_append BEFORE INSERT ON messaging.messages
               FOR EACH ROW WHEN (NEW.content LIKE '{prefix}%')
               EXECUTE FUNCTION public.test_slow_append()",
            secs = each.as_secs_f64()
        ))
        .await
        .expect("the slow-append trigger");
    let ran = tokio::spawn(run).await;
    admin
        .batch_execute(
            "DROP TRIGGER IF EXISTS test_slow_append ON messaging.messages;
             DROP FUNCTION IF EXISTS public.test_slow_append()",
        )
        .await
        .expect("removing the slow-append trigger");
    match ran {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The most a refused send may take in its instance's handlers (a bucket bound of the
/// histogram, in seconds): under the waits behind a batch in the delay-rule tests (hundreds
/// of ms to seconds), with room for a debug build's token check and body read on a saturated
/// core (nearly all refusals take under 1 ms).
const REFUSED_WITHIN: &str = "0.25";

/// The send route's answers of `status`, as the process's metrics registry counts them
/// (`http_server_request_duration_seconds`: one registry per process, shared by every
/// instance built in it; counts only grow): each bucket's `le` (seconds) and cumulative
/// count, in the registry's order (the last is `+Inf`, all of them). Each answer is timed from
/// the request reaching the instance's middleware to its answer. (Timed by the client, a
/// refusal also holds the client's wait for a connection and for a core, shared with the
/// instance in this process: 560 ms once with two busy loops beside it.)
fn send_answers_by_duration(status: u16) -> Vec<(String, u64)> {
    let code = format!("http_response_status_code=\"{status}\"");
    switchboard::platform::metrics::render()
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_request_method=\"POST\"")
                && l.contains("/conversations/{id}/messages\"")
                && l.contains(&code)
        })
        .filter_map(|l| {
            let (labels, rest) = l.split_once("} ")?;
            let le = labels.split_once("le=\"")?.1.split('"').next()?.to_owned();
            Some((le, rest.split_whitespace().next()?.parse::<u64>().ok()?))
        })
        .collect()
}

/// `after` less `before` ([`send_answers_by_duration`], bucket by bucket).
fn since(before: &[(String, u64)], after: Vec<(String, u64)>) -> Vec<(String, u64)> {
    after
        .into_iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(l, _)| *l == le).map_or(0, |(_, n)| *n);
            (le, n - was)
        })
        .collect()
}

/// The gap between waves of the admission tests' bursts.
const WAVE_GAP: Duration = Duration::from_millis(50);

/// Sends up to `waves` waves of `per_wave` messages at once, `gap` apart, to an in-process
/// instance started with `args` — if `waited` is given, each stamped `X-Request-Start`: the
/// first wave as sent, the others as `waited` before it — none after a send was refused
/// (later waves could only add load: the burst lasts as long as this machine needs to make
/// the instance refuse, up to `waves`), and checks that some were refused fast (503
/// problem+json with `Retry-After`, each answered within [`REFUSED_WITHIN`] seconds of
/// reaching the instance), some accepted, and exactly the accepted ones stored with gapless
/// `seq`s. The sends take turns among four users in two direct conversations, so that no
/// sender alone reaches their share of the limit (half of it,
/// [`switchboard::messaging::admission::USER_SHARE`]) unless the limit itself was cut: from
/// one sender, the share refused the bursts whether or not admission control's delay rule
/// acted, and the tests of that rule could not fail.
async fn send_burst(
    name: &str,
    (waves, per_wave, gap): (usize, usize, Duration),
    waited: Option<Duration>,
    args: &[&str],
) {
    // Both ends of every send's connection are in this process: up to two descriptors per
    // send in flight. As a service does at start (`platform::open_files`).
    switchboard::platform::open_files::raise();
    let app = in_process_messaging(&format!("overload-{name}-{}", unique()), args).await;
    let (port, stop) = (app.port(), app.stop_token());
    let running = tokio::spawn(app.run_until_stopped());
    let server = format!("http://127.0.0.1:{port}");

    let mut senders = Vec::new();
    for pair in ["ab", "cd"] {
        let (x, y) = (
            register(&format!("{name}_{pair}_1")).await,
            register(&format!("{name}_{pair}_2")).await,
        );
        let conv = x.direct_with(&y).await;
        senders.push((x.access.clone(), conv.clone()));
        senders.push((y.access.clone(), conv));
    }
    let client = http();
    let refusals_before = send_answers_by_duration(503);
    let accepted_before = send_answers_by_duration(201);
    let burst = std::time::Instant::now();
    // Set by the first refusal: the waves after it are not sent.
    let refused_once = std::sync::atomic::AtomicBool::new(false);
    let answers = futures_util::future::join_all((0..per_wave * waves).map(|n| {
        let (client, server, refused_once) = (&client, &server, &refused_once);
        let (token, conv) = &senders[n % senders.len()];
        async move {
            tokio::time::sleep(gap * (n / per_wave) as u32).await;
            if refused_once.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let mut r = client
                .post(format!("{server}/api/conversations/{conv}/messages"))
                .bearer_auth(token);
            if let Some(waited) = waited {
                let waited = if n < per_wave { Duration::ZERO } else { waited };
                let at = (std::time::SystemTime::now() - waited)
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after the epoch");
                r = r.header(
                    "X-Request-Start",
                    format!("t={}.{:03}", at.as_secs(), at.subsec_millis()),
                );
            }
            let r = r
                .json(&serde_json::json!({"content": format!("{name} m{n}")}))
                .send()
                .await
                .expect("request");
            let status = r.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                refused_once.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let retry_after = r.headers().get("retry-after").cloned();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            Some((conv, status, retry_after, body, burst.elapsed()))
        }
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().flatten().collect();
    let mut accepted: std::collections::HashMap<&String, Vec<i64>> = Default::default();
    let mut refused = 0;
    for (conv, status, retry_after, body, _) in &answers {
        match *status {
            StatusCode::CREATED => accepted
                .entry(*conv)
                .or_default()
                .push(body["seq"].as_i64().expect("seq")),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert!(retry_after.is_some(), "503 without Retry-After: {body}");
                assert_eq!(body["status"], 503, "problem+json: {body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        refused > 0,
        "nothing was refused: admission control did not act; {} sends accepted, the last \
         answered {:?} after the burst began",
        answers.len(),
        answers.iter().map(|a| a.4).max().unwrap_or_default()
    );
    assert!(!accepted.is_empty(), "nothing was accepted");
    let refusals = since(&refusals_before, send_answers_by_duration(503));
    let within = |le: &str| {
        refusals
            .iter()
            .find(|(l, _)| l == le)
            .map_or(0, |(_, n)| *n)
    };
    let all = within("+Inf");
    assert_eq!(all, refused as u64, "the instance counted its refusals");
    assert_eq!(
        within(REFUSED_WITHIN),
        all,
        "refusals answered within (s, cumulative) {refusals:?}; sends accepted within {:?}",
        since(&accepted_before, send_answers_by_duration(201))
    );
    // Each conversation once (two senders share it).
    for (_, conv) in senders.iter().step_by(2) {
        let stored = stored_seqs(conv).await;
        let mut here = accepted.get(conv).cloned().unwrap_or_default();
        here.sort_unstable();
        assert_eq!(stored, here, "exactly the accepted sends are stored");
        assert_eq!(stored, (1..=stored.len() as i64).collect::<Vec<_>>());
    }

    stop.cancel();
    stopped(running).await;
}

/// A messaging instance started with a soft open-files limit of 128 (RLIMIT_NOFILE; the
/// soft limit containerd 2 and systemd give a container or a unit is 1024, far under their
/// hard limit) raises it to the hard limit at start, and then answers 400 connections held
/// open at once, each on its own socket. (Without raising it, accept(2) failed with EMFILE
/// past the 128th descriptor and the connections beyond waited unanswered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_given_a_low_soft_open_files_limit_raises_it_and_holds_every_connection() {
    let _alone = exclusive().await;
    // 400 sockets and the instance's own descriptors need a hard limit well above them.
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .to_owned();
            line.split_whitespace().nth(4)?.parse::<u64>().ok()
        })
        .unwrap_or(u64::MAX);
    assert!(
        hard >= 1024,
        "this test needs a hard open-files limit of at least 1024, not {hard}"
    );
    let (name, _) = instances()[0].clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut env: Vec<(String, String)> = crate::failover::environ(crate::failover::pid_of(&name))
        .into_iter()
        .filter(|(k, _)| !["MESSAGING_BIND", "METRICS_BIND", "INSTANCE_ID"].contains(&k.as_str()))
        .collect();
    env.extend([
        ("MESSAGING_BIND".into(), format!("127.0.0.1:{port}")),
        ("METRICS_BIND".into(), "127.0.0.1:0".into()),
        ("INSTANCE_ID".into(), format!("nofile-{}", unique())),
    ]);
    let log = std::fs::File::create(format!(
        "{}/logs/nofile.log",
        std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh")
    ))
    .expect("log");
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=128:", "--", env!("CARGO_BIN_EXE_messaging")])
        .env_clear()
        .envs(env)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start an instance under prlimit");
    let (url, pid) = (format!("http://127.0.0.1:{port}"), child.id());
    let held = async move {
        until_ready(&format!("{url}/api/readyz"), Duration::from_secs(30)).await;
        let limits =
            std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the instance's limits");
        let open_files: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line")
            .split_whitespace()
            .collect();
        // "Max open files <soft> <hard> files"
        assert_eq!(
            open_files[3], open_files[4],
            "the soft limit was not raised to the hard one: {limits}"
        );
        // 400 connections opened at once and held until every one is answered.
        let mut sockets = Vec::new();
        for _ in 0..400 {
            sockets.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        let answers = futures_util::future::join_all(sockets.iter_mut().map(|s| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /api/healthz HTTP/1.1\r\nHost: switchboard\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
                .await
                .ok()?
                .ok()?;
            Some(head)
        }))
        .await;
        let answered = answers
            .iter()
            .filter(|a| a.is_some_and(|h| &h == b"HTTP/1.1 200"))
            .count();
        assert_eq!(
            answered, 400,
            "connections answered 200 of 400 held at once"
        );
        drop(sockets);
    };
    // The instance is stopped whatever the outcome.
    let outcome = tokio::spawn(held).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
