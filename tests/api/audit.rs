//! The audit trail (issue 18): what happens to an account is recorded with its session,
//! address and user agent; users read their own events; the service role cannot change or
//! remove a row, and a row changed behind its back breaks the hash chain where it was.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

#[tokio::test]
async fn a_users_security_events_are_theirs_newest_first_with_where_they_came_from() {
    let user = register("audit").await;
    // A failed sign-in, a sign-in with a user agent, a password change.
    let (status, _, _) = login_from(&http(), &user.username, "not the password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let peer = random_loopback();
    let res = http_from(peer)
        .post(format!("{}/auth/login", base()))
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"login": user.username, "password": user.password}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let (status, _, _) = user
        .call(
            Method::POST,
            "/auth/me/password",
            Some(
                json!({"current_password": user.password, "new_password": "another good password"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, events) = user.get("/auth/me/events").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(
        kinds(&events),
        [
            "password_changed",
            "signed_in",
            "sign_in_failed",
            "account_created"
        ],
        "{events}"
    );
    let login = &events["events"][1];
    assert_eq!(login["ip"], peer.to_string().as_str(), "{login}");
    assert_eq!(login["user_agent"], "audit-test/1.0");
    assert!(login["session_id"].is_string(), "{login}");
    // Paging, and nobody else's events.
    let newest = events["events"][0]["pos"].as_i64().expect("pos");
    let (_, older) = user
        .get(&format!("/auth/me/events?limit=2&before={newest}"))
        .await;
    assert_eq!(kinds(&older), ["signed_in", "sign_in_failed"]);
    let stranger = register("audit_other").await;
    let (_, theirs) = stranger.get("/auth/me/events").await;
    assert_eq!(kinds(&theirs), ["account_created"]);
    let (status, headers, body) = user
        .call(Method::GET, "/auth/me/events?limit=0", None)
        .await;
    assert_problem(status, &headers, &body, 400);
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_the_trail_and_tampering_breaks_the_chain() {
    let user = register("audit_chain").await;
    let url = std::env::var("SWITCHBOARD_AUTH_DB_URL").expect("test.sh sets it");
    let (cfg, tls) = switchboard::platform::db::tls::parse(&url).expect("url");
    let (service, conn) = cfg.connect(tls).await.expect("connect as switchboard_auth");
    tokio::spawn(conn);
    // Every way the service's own role could change or remove what it wrote: refused with
    // insufficient_privilege (42501) — it owns neither the table nor its schema.
    for statement in [
        "UPDATE audit.events SET detail = 'x' WHERE pos = 1",
        "DELETE FROM audit.events WHERE pos = 1",
        "TRUNCATE audit.events",
        "ALTER TABLE audit.events DISABLE TRIGGER events_append_only",
        "ALTER TABLE audit.events OWNER TO switchboard_auth",
        "DROP TABLE audit.events",
        "DROP SCHEMA audit CASCADE",
        "SET ROLE switchboard_audit",
        "CREATE OR REPLACE FUNCTION audit.chain() RETURNS trigger LANGUAGE plpgsql \
         AS $$ BEGIN RETURN NEW; END $$",
        "CREATE TABLE audit.shadow (pos bigint)",
    ] {
        let err = service.batch_execute(statement).await.expect_err(statement);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err:?}"
        );
    }
    // A GRANT by a non-owner only warns; the right is still not there.
    let _ = service
        .batch_execute("GRANT UPDATE, DELETE ON audit.events TO switchboard_auth")
        .await;
    let rights = service
        .query_one(
            "SELECT has_table_privilege('audit.events', 'INSERT'),
                    has_table_privilege('audit.events', 'UPDATE'),
                    has_table_privilege('audit.events', 'DELETE')",
            &[],
        )
        .await
        .expect("rights");
    assert_eq!(
        (rights.get::<_, bool>(0), rights.get(1), rights.get(2)),
        (true, false, false)
    );
    // An insert that names its own place and hashes gets the chain's instead.
    let row = service
        .query_one(
            "INSERT INTO audit.events (pos, kind, prev_hash, row_hash)
             VALUES (1, 'forged', sha256('x'), sha256('y')) RETURNING pos",
            &[],
        )
        .await
        .expect("the service may append");
    assert!(row.get::<_, i64>(0) > 1, "the trigger set pos");
    let admin = admin(false).await;
    let check = || async {
        admin
            .query_one("SELECT audit.first_break()", &[])
            .await
            .expect("verify")
            .get::<_, Option<i64>>(0)
    };
    assert_eq!(check().await, None, "the chain is intact");

    // Behind the triggers' back (a superuser), one field of this user's row changes: the
    // verification names that row. Put back, the chain checks out again.
    let id: uuid::Uuid = user.id.parse().expect("uuid");
    let row = admin
        .query_one(
            "SELECT pos, user_agent FROM audit.events WHERE user_id = $1 ORDER BY pos LIMIT 1",
            &[&id],
        )
        .await
        .expect("row");
    let (pos, agent): (i64, Option<String>) = (row.get(0), row.get(1));
    let set_agent = |value: Option<String>| {
        let admin = &admin;
        async move {
            admin
                .batch_execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
                .await
                .expect("disable");
            admin
                .execute(
                    "UPDATE audit.events SET user_agent = $2 WHERE pos = $1",
                    &[&pos, &value],
                )
                .await
                .expect("tamper");
            admin
                .batch_execute("ALTER TABLE audit.events ENABLE TRIGGER events_append_only")
                .await
                .expect("enable");
        }
    };
    set_agent(Some("forged".into())).await;
    assert_eq!(check().await, Some(pos));
    set_agent(agent).await;
    assert_eq!(check().await, None);
}
