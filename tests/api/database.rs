//! The database itself: least-privilege roles and migrations that several instances may
//! apply at once.

use crate::common::*;
use serde_json::{json, Value};
use switchboard::startup::migrations;

/// Connects as the URL says — TLS settings included, read by the services' own parser.
async fn try_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (cfg, tls) = switchboard::platform::db::tls::parse(url).map_err(|e| format!("{e:#}"))?;
    let (client, conn) = cfg
        .connect(tls)
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    tokio::spawn(conn);
    Ok(client)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    try_connect(url).await.expect("connect")
}

/// The same URL with another database name (the last path segment), its query kept.
fn with_db(url: &str, db: &str) -> String {
    let (url, query) = url.split_once('?').map_or((url, ""), |(u, q)| (u, q));
    let (server, _) = url.rsplit_once('/').expect("URL with a database");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{server}/{db}{query}")
}

#[tokio::test]
async fn service_roles_reach_the_database_only_over_verified_tls() {
    // As the services connect (sslmode=verify-full against the local CA): TLS is in use.
    let url = env("SWITCHBOARD_MESSAGING_DB_URL");
    let ssl: bool = connect(&url)
        .await
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the service role's connection is not encrypted");
    let (plain, _) = url.split_once('?').expect("URL with TLS settings");
    // Plaintext: refused by the server (pg_hba.conf), so a misconfigured service fails loudly.
    let err = try_connect(plain)
        .await
        .expect_err("a plaintext service connection was accepted");
    assert!(
        err.contains("pg_hba.conf") || err.contains("no encryption"),
        "{err}"
    );
    // A server whose certificate does not chain to the CA given is refused by the client.
    let other_ca = std::env::temp_dir().join(format!("other-ca-{}.pem", unique()));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another CA",
            "-keyout",
            "/dev/null",
            "-out",
        ])
        .arg(&other_ca)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let wrong = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    assert!(
        try_connect(&wrong).await.is_err(),
        "a server the CA did not sign was trusted"
    );
    let _ = std::fs::remove_file(other_ca);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by scripts/test.sh"))
}

#[tokio::test]
async fn the_messaging_role_reads_public_profiles_and_nothing_else_of_auth() {
    let messaging = connect(&env("SWITCHBOARD_MESSAGING_DB_URL")).await;
    assert!(messaging
        .query(
            "SELECT id, username, display_name, active FROM auth.public_profiles LIMIT 1",
            &[]
        )
        .await
        .is_ok());
    for sql in [
        "SELECT password_hash FROM auth.users LIMIT 1",
        "SELECT email FROM auth.users LIMIT 1",
        "SELECT token_hash FROM auth.refresh_tokens LIMIT 1",
        "SELECT id FROM auth.sessions LIMIT 1",
    ] {
        let err = messaging.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    let auth = connect(&env("SWITCHBOARD_AUTH_DB_URL")).await;
    let err = auth
        .query("SELECT content FROM messaging.messages LIMIT 1", &[])
        .await
        .expect_err("auth must not read messages");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    // Neither service role can create objects outside its schema.
    let err = messaging
        .batch_execute("CREATE TABLE public.sneaky (id int)")
        .await
        .expect_err("no CREATE on public");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

/// A scratch database on the primary, `migrate_<unique>`, with the schemas and audit
/// objects of the bootstrap (postgres/init.sql, postgres/audit.sql) and no migration yet:
/// its name and a superuser connection to it. Dropped by [`drop_scratch`].
async fn scratch_database(admin: &tokio_postgres::Client) -> (String, tokio_postgres::Client) {
    let db = format!("migrate_{}", unique());
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .expect("create db");
    let primary = env("SWITCHBOARD_PRIMARY_ADMIN_URL");
    let scratch_admin = connect(&with_db(&primary, &db)).await;
    scratch_admin
        .batch_execute(
            "CREATE SCHEMA auth AUTHORIZATION switchboard_auth;
             CREATE SCHEMA messaging AUTHORIZATION switchboard_messaging;",
        )
        .await
        .expect("schemas");
    // The bootstrap's audit schema, from the script the stacks run (postgres/init.sql).
    scratch_admin
        .batch_execute(include_str!("../../postgres/audit.sql"))
        .await
        .expect("postgres/audit.sql");
    (db, scratch_admin)
}

/// Drops a [`scratch_database`], closing its connections.
async fn drop_scratch(admin: &tokio_postgres::Client, db: &str, scratch: tokio_postgres::Client) {
    drop(scratch);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .expect("drop db");
}

/// `schema`'s migrations applied to database `db` by `n` tasks at once, as the service's
/// role.
async fn migrate_concurrently(db: &str, schema: &'static str, n: usize) {
    let (url, runner): (_, fn() -> refinery::Runner) = match schema {
        "auth" => (
            "SWITCHBOARD_AUTH_DB_URL",
            migrations::auth::migrations::runner,
        ),
        _ => (
            "SWITCHBOARD_MESSAGING_DB_URL",
            migrations::messaging::migrations::runner,
        ),
    };
    let url = secrecy::SecretString::from(with_db(&env(url), db));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            switchboard::platform::db::migrate(&url, schema, runner()).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("migration");
    }
}

#[tokio::test]
async fn migrations_applied_by_several_instances_at_once_run_exactly_once() {
    let admin = admin(false).await;
    let (db, scratch_admin) = scratch_database(&admin).await;
    migrate_concurrently(&db, "auth", 4).await;
    migrate_concurrently(&db, "messaging", 4).await;
    for schema in ["auth", "messaging"] {
        let rows = scratch_admin
            .query(
                &format!("SELECT version FROM {schema}.refinery_schema_history"),
                &[],
            )
            .await
            .expect("history");
        let files = std::fs::read_dir(format!("migrations/{schema}"))
            .expect("dir")
            .count();
        assert_eq!(rows.len(), files, "{schema}: each migration recorded once");
    }
    drop_scratch(&admin, &db, scratch_admin).await;
}

/// Vacuum never gives the hot tables' empty tail pages back (migration V17): their
/// truncation needs the table's ACCESS EXCLUSIVE lock, which every send conflicts with, and
/// vacuum's tries for it coincided with bursts of refused sends in the benchmark.
/// `user_counters` is filled, emptied and vacuumed, and keeps its pages; a copy of the same
/// shape without the setting (the control: the same steps do truncate) is cut to nothing.
/// The five hot tables, and no other, carry the storage parameter.
#[tokio::test]
async fn vacuum_keeps_the_hot_tables_tail_pages() {
    let admin = admin(false).await;
    let (db, scratch) = scratch_database(&admin).await;
    migrate_concurrently(&db, "auth", 1).await;
    migrate_concurrently(&db, "messaging", 1).await;
    scratch
        .batch_execute(
            "CREATE UNLOGGED TABLE messaging.counters_control
                 (LIKE messaging.user_counters INCLUDING ALL)",
        )
        .await
        .expect("control table");
    let pages = |table: &'static str| {
        let scratch = &scratch;
        async move {
            scratch
                .batch_execute(&format!("VACUUM {table}"))
                .await
                .expect("vacuum");
            scratch
                .query_one(
                    "SELECT pg_relation_size($1::text::regclass)
                          / current_setting('block_size')::bigint",
                    &[&table],
                )
                .await
                .expect("size")
                .get::<_, i64>(0)
        }
    };
    for table in ["messaging.user_counters", "messaging.counters_control"] {
        scratch
            .batch_execute(&format!(
                "INSERT INTO {table} (user_id, budget, window_start, amount)
                     SELECT gen_random_uuid(), 'send', now(), 1 FROM generate_series(1, 20000);
                 DELETE FROM {table};"
            ))
            .await
            .expect("fill and empty");
    }
    // The deleted rows can be removed once no snapshot anywhere may still see them (the
    // replicas' queries hold the primary's horizon back through hot_standby_feedback): until
    // the control is cut to nothing, vacuum again.
    let mut control = pages("messaging.counters_control").await;
    for _ in 0..100 {
        if control == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        control = pages("messaging.counters_control").await;
    }
    assert_eq!(control, 0, "the control was never truncated");
    let kept = pages("messaging.user_counters").await;
    assert!(
        kept > 0,
        "the emptied user_counters was truncated to nothing"
    );
    let hot = [
        "conversations",
        "email_digests",
        "notify_queue",
        "participants",
        "user_counters",
    ];
    let kept: Vec<String> = scratch
        .query(
            "SELECT c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'messaging'
             WHERE EXISTS (
                 SELECT 1 FROM pg_options_to_table(c.reloptions) o
                 WHERE o.option_name = 'vacuum_truncate' AND NOT o.option_value::boolean)
             ORDER BY c.relname",
            &[],
        )
        .await
        .expect("reloptions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, hot, "the tables vacuum does not truncate");
    drop_scratch(&admin, &db, scratch).await;
}

/// The event bus sends a backlog larger than one `NOTIFY` payload whole and in order: events
/// queued together (here, before the publisher's connection is up) arrive split over several
/// notifications, every one of them, in the order published (it does not tell one statement
/// from several: the order within the statement is what it guards). (The stack's
/// listeners get them too: deliveries to users nobody is, which they drop.)
#[tokio::test]
async fn the_bus_sends_a_backlog_of_several_payloads_whole_and_in_order() {
    use futures_util::StreamExt;
    use switchboard::{
        messaging::events::BusEvent,
        platform::{bus, tasks::Tasks},
    };
    let url = env("SWITCHBOARD_MESSAGING_DB_URL");
    let (cfg, tls) = switchboard::platform::db::tls::parse(&url).expect("database URL");
    let (listener, mut conn) = cfg.connect(tls).await.expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute(&format!("LISTEN {}", bus::CHANNEL))
        .await
        .expect("LISTEN");

    let tag = unique();
    const EVENTS: usize = 200;
    let tasks = Tasks::new();
    let publisher = bus::Publisher::spawn(url.into(), format!("bus-test-{tag}"), &tasks);
    for n in 0..EVENTS {
        let frame = serde_json::value::to_raw_value(
            &json!({"bus_test": tag, "n": n, "pad": "x".repeat(100)}),
        )
        .expect("frame");
        publisher.publish(BusEvent::Users {
            user_ids: vec![uuid::Uuid::new_v4()],
            frame,
        });
    }

    let (mut seen, mut notifications) = (Vec::new(), 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < EVENTS {
        let payload = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {EVENTS} events arrived", seen.len()))
            .expect("listening");
        let events: Vec<Value> = serde_json::from_str(&payload).expect("a JSON array");
        let ours: Vec<u64> = events
            .iter()
            .filter_map(|e| {
                let frame = e.get("users")?.get("frame")?;
                (frame["bus_test"] == tag.as_str()).then(|| frame["n"].as_u64())?
            })
            .collect();
        if !ours.is_empty() {
            notifications += 1;
            seen.extend(ours);
        }
    }
    tasks.stop(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        (0..EVENTS as u64).collect::<Vec<_>>(),
        "every event, in order"
    );
    assert!(
        notifications > 1,
        "the backlog fit one payload: the test proves nothing about several"
    );
}

/// The same URL on another port (`host:port` after the `@`).
fn with_port(url: &str, port: &str) -> String {
    let (head, rest) = url.split_once('@').expect("URL with credentials");
    let (_, path) = rest.split_once('/').expect("URL with a database");
    let host = rest.split(':').next().expect("host");
    format!("{head}@{host}:{port}/{path}")
}

/// A read with a consistency token waits for a replica connection only within its RYW wait
/// (`RYW_WAIT_MS`): with every connection of the replica's request pool taken (by slow reads,
/// or by token reads waiting out a lagging replay), it is served by the primary once that
/// wait is over, labelled `replica-busy` — not after the pool's own, longer wait
/// (`DB_POOL_TIMEOUT_MS`) and not labelled `replica-unhealthy`. A read without a token waits
/// the pool's time, then goes to the primary labelled busy too. The service's own routing,
/// pools and TLS, on the real replica; the replica's pool has one connection, held here.
#[tokio::test]
async fn a_token_read_waits_for_a_busy_replica_only_within_its_ryw_wait() {
    use secrecy::SecretString;
    use std::time::{Duration, Instant};
    use switchboard::platform::{
        config::PoolSettings,
        db::{
            self,
            routing::{ReplicaPolicy, ServerPools},
            ReadRoute, Routing,
        },
    };
    let primary_url = env("SWITCHBOARD_MESSAGING_DB_URL");
    let replica_admin = env("SWITCHBOARD_REPLICA_ADMIN_URL");
    let replica_port = replica_admin
        .rsplit_once(':')
        .and_then(|(_, p)| p.split('/').next())
        .expect("replica port");
    let replica_url = with_port(&primary_url, replica_port);
    let (pool_wait, ryw_wait) = (Duration::from_millis(800), Duration::from_millis(200));
    let settings = PoolSettings {
        max_size: 1,
        wait_timeout: pool_wait,
        statement_timeout: Duration::from_secs(5),
    };
    let pools = |url: &str| ServerPools {
        requests: db::pool(&SecretString::from(url.to_owned()), &settings, "busy-test")
            .expect("pool"),
        monitor: db::monitor_pool(&SecretString::from(url.to_owned()), &settings, "busy-test")
            .expect("monitor pool"),
    };
    let replica = pools(&replica_url);
    let replica_requests = replica.requests.clone();
    let routing = Routing::new(
        pools(&primary_url),
        vec![("replica-1".to_owned(), replica)],
        ReplicaPolicy {
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
            ryw_wait,
        },
    );
    // A token the replica has replayed: the replica could serve the read, were it not busy.
    let token: db::Lsn = admin(false)
        .await
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .expect("lsn")
        .get(0);
    let (free, route) = routing.read(Some(token)).await.expect("read");
    assert_eq!(
        route,
        ReadRoute::Replica,
        "an idle replica serves the token read"
    );
    drop(free);

    // Every replica connection taken.
    let held = replica_requests
        .get()
        .await
        .expect("the replica's one connection");
    let started = Instant::now();
    let (on_primary, route) = routing.read(Some(token)).await.expect("token read");
    let waited = started.elapsed();
    drop(on_primary);
    assert_eq!(route, ReadRoute::PrimaryReplicaBusy);
    assert!(
        waited >= ryw_wait && waited < pool_wait,
        "a token read waited {waited:?} for a busy replica (its RYW wait is {ryw_wait:?}, the pool's {pool_wait:?})"
    );
    let started = Instant::now();
    let (on_primary, route) = routing.read(None).await.expect("read without a token");
    drop(on_primary);
    assert_eq!(route, ReadRoute::PrimaryReplicaBusy, "busy, not unhealthy");
    assert!(started.elapsed() >= pool_wait, "{:?}", started.elapsed());
    drop(held);
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first.
fn plan_nodes(node: &Value, out: &mut Vec<Value>) {
    out.push(node.clone());
    for child in node["Plans"].as_array().into_iter().flatten() {
        plan_nodes(child, out);
    }
}

/// A history page reads its conversation's index in page order and stops after the page, on
/// a connection's first executions of the statement too: custom plans (forced here, as
/// PostgreSQL makes them for a prepared statement's first five executions), with the
/// statistics knowing the conversation's 3000 messages and taking the reader's visible range
/// for 0.5 % of them, the messages stored among two other conversations' as concurrent
/// sends store them. (With the page size a parameter the custom plan knew, it read all 3000
/// through a bitmap scan and sorted them.) Newest first and oldest first.
#[tokio::test]
async fn a_history_page_reads_only_its_page_on_a_connections_first_executions() {
    let (a, b, c, d) = (
        register("plan_a").await,
        register("plan_b").await,
        register("plan_c").await,
        register("plan_d").await,
    );
    let conv = a.direct_with(&b).await;
    let convs = vec![
        conv.clone(),
        a.direct_with(&c).await,
        a.direct_with(&d).await,
    ];
    let admin = admin(false).await;
    admin
        .execute(
            "INSERT INTO messaging.messages
                 (id, conversation_id, seq, sender_id, kind, content, rev, created_rev)
             SELECT gen_random_uuid(), c.id::uuid, g, $2::text::uuid, 'text', 'm' || g, g, g
             FROM generate_series(1, 3000) g, unnest($1::text[]) AS c(id)
             ORDER BY g",
            &[&convs, &a.id],
        )
        .await
        .expect("messages");
    admin
        .batch_execute("ANALYZE messaging.messages")
        .await
        .expect("analyze");
    for (ascending, after, direction, first) in
        [(false, "NULL", "Backward", 3000), (true, "0", "Forward", 1)]
    {
        let name = if ascending { "page_asc" } else { "page_desc" };
        admin
            .batch_execute(&format!(
                "SET plan_cache_mode = force_custom_plan;
                 PREPARE {name} (uuid, bigint, bigint, int8, uuid) AS {}",
                switchboard::messaging::messages::history_page_sql(ascending)
            ))
            .await
            .expect("prepare");
        let explained = admin
            .query_one(
                &format!(
                    "EXPLAIN (ANALYZE, FORMAT JSON)
                     EXECUTE {name} ('{conv}', NULL, {after}, 51, '{}')",
                    a.id
                ),
                &[],
            )
            .await
            .expect("explain");
        let plan: Value = explained.get(0);
        let mut nodes = Vec::new();
        plan_nodes(&plan[0]["Plan"], &mut nodes);
        let scans: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["Relation Name"] == "messages" && n["Alias"] == "p")
            .collect();
        let shown = serde_json::to_string_pretty(&plan).unwrap_or_default();
        assert_eq!(scans.len(), 1, "one scan of the page's messages: {shown}");
        assert_eq!(scans[0]["Node Type"], "Index Scan", "{shown}");
        assert_eq!(scans[0]["Scan Direction"], direction, "{shown}");
        assert_eq!(
            scans[0]["Actual Rows"].as_f64(),
            Some(51.0),
            "read only the page: {shown}"
        );
        assert!(
            nodes.iter().all(|n| n["Node Type"] != "Sort"),
            "no sort of the conversation: {shown}"
        );
        let page = admin
            .query(
                &format!("EXECUTE {name} ('{conv}', NULL, {after}, 51, '{}')", a.id),
                &[],
            )
            .await
            .expect("page");
        let seqs: Vec<i64> = page.iter().map(|r| r.get("seq")).collect();
        assert_eq!(seqs.len(), 51);
        assert_eq!(
            seqs[0], first,
            "the page starts at its end of the conversation"
        );
    }
}
