//! Limits that must hold under attack (issue 14, items 5–8): password attempts counted
//! atomically per account on every endpoint that checks a password, an email change that
//! tells nothing, parameters range-checked at the edge, consistency tokens bound to this
//! cluster, bounded tickets, resumes and uploads, downloads that race deletes, and services
//! that refuse to start on a placeholder secret.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const MIB: usize = 1024 * 1024;

/// 15 sign-ins at once, each from its own address.
async fn guesses(logins: Vec<String>, password: &str) -> Vec<StatusCode> {
    let answers = futures_util::future::join_all(logins.into_iter().map(|login| async move {
        login_from(&http_from(random_loopback()), &login, password)
            .await
            .0
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
    answers
}

#[tokio::test]
async fn concurrent_wrong_passwords_are_counted_before_bcrypt_per_account() {
    // By one name: at most 5 of 15 simultaneous guesses reach bcrypt.
    let victim = register("guess").await;
    let answers = guesses(vec![victim.username.clone(); 15], "wrong password!").await;
    let checked = answers
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        checked <= 5,
        "{checked} guesses reached bcrypt (the limit is 5)"
    );
    let (s, h, b) = login_from(&http(), &victim.username, &victim.password).await;
    assert_problem(s, &h, &b, 429);
    assert!(h.get("retry-after").is_some(), "{b}");
    // The account is locked by any of its names: its email with the right password fails
    // too — as a wrong password would, so locking it by its public username never confirms
    // which email it has: a made-up address answers exactly the same.
    let email = format!("{}@example.com", victim.username);
    let (s, h, b) = login_from(&http(), &email, &victim.password).await;
    assert_problem(s, &h, &b, 401);
    let (s2, _, b2) = login_from(&http(), &format!("nobody_{email}"), "whatever pw").await;
    assert_eq!((s2, &b2["detail"]), (s, &b["detail"]), "{b2}");

    // By both names alternately, in both cases: the right password still does not get in.
    let victim = register("guess2").await;
    let email = format!("{}@example.com", victim.username);
    let names = (0..15)
        .map(|i| {
            if i % 2 == 0 {
                victim.username.clone()
            } else {
                email.to_uppercase()
            }
        })
        .collect();
    guesses(names, "wrong password!").await;
    for login in [victim.username.as_str(), email.as_str()] {
        let (s, _, b) = login_from(&http(), login, &victim.password).await;
        assert_ne!(s, StatusCode::OK, "{login} signed in past the lock: {b}");
    }
}

#[tokio::test]
async fn password_checks_behind_a_stolen_token_are_limited_like_sign_ins() {
    for (method, path, field) in [
        (Method::POST, "/auth/me/password", "current_password"),
        (Method::DELETE, "/auth/me", "password"),
    ] {
        let user = register("oracle").await;
        let guess = |pw: &str| {
            let mut body = json!({"new_password": "another good password"});
            body[field] = json!(pw);
            body
        };
        let answers = futures_util::future::join_all(
            (0..8).map(|_| user.call(method.clone(), path, Some(guess("not it at all")))),
        )
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.0.as_u16()).collect();
        assert!(
            statuses.iter().filter(|s| **s == 403).count() <= 5
                && statuses.iter().all(|s| *s == 403 || *s == 429),
            "{path}: {statuses:?}"
        );
        let (s, h, b) = user
            .call(method.clone(), path, Some(guess(&user.password)))
            .await;
        assert_problem(s, &h, &b, 429);
        assert!(h.get("retry-after").is_some(), "{path}: {b}");
    }
}

#[tokio::test]
async fn an_email_change_answers_the_same_whether_the_address_is_taken() {
    let (a, other) = (register("mail_a").await, register("mail_b").await);
    let taken = format!("{}@EXAMPLE.com", other.username);
    let free = format!("free_{}@example.com", a.username);
    let (s1, _, b1) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": taken, "current_password": a.password})),
        )
        .await;
    let (s2, _, b2) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": free, "current_password": a.password})),
        )
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{b1} {b2}"
    );
    assert_eq!(b1["detail"], b2["detail"]);
    assert_eq!(b1["pending_email"], taken.as_str());
    let keys = |b: &Value| b.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&b1), keys(&b2));
    // Neither takes effect before its proof (issue 18): a free address is sent a link, a
    // taken one nothing.
    let (_, me) = a.get("/auth/me").await;
    assert_eq!(me["email"], format!("{}@example.com", a.username));
    let (_, them) = other.get("/auth/me").await;
    assert_eq!(them["email"], format!("{}@example.com", other.username));
    let link = await_mails(&free, 1, std::time::Duration::from_secs(15)).await;
    assert_eq!(link[0].subject, "Confirm your email address");
}

/// A consistency token this service would sign for `lsn` (the test stack's secret).
fn token_for(lsn: &str) -> String {
    let secret = std::env::var("CONSISTENCY_TOKEN_SECRET").expect("secret");
    let ring = switchboard::platform::secrets::KeyRing::from_secrets(&[secret]);
    let tag = ring.sign(lsn.as_bytes());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{lsn}.{}", b64.encode(&tag[..16]))
}

#[tokio::test]
async fn out_of_range_parameters_and_tokens_ahead_of_the_primary_are_400() {
    let user = register("range").await;
    let conv = user.direct_with(&register("range2").await).await;
    let nil = uuid::Uuid::nil();
    for path in [
        format!("/api/conversations?cursor=-300000000000000000_{nil}"),
        format!("/api/conversations?cursor=9223372036854775807_{nil}"),
        format!("/api/conversations?cursor=99999999999999999999_{nil}"),
        "/api/conversations?limit=9223372036854775807".to_owned(),
        format!("/api/conversations/{conv}/messages?before=-1"),
        format!("/api/conversations/{conv}/messages?after=99999999999999999999"),
        "/api/search?q=x&offset=-5".to_owned(),
        "/api/search?q=x&limit=0".to_owned(),
    ] {
        let (s, h, b) = user.call(Method::GET, &path, None).await;
        assert_problem(s, &h, &b, 400);
    }
    // Signed with the right key, but for a WAL position this primary never reached.
    let ahead = token_for("FFFFFFFF/FFFFFFF0");
    let (s, h, b) = user
        .call_with(
            Method::GET,
            "/api/conversations",
            None,
            &[("x-consistency-token", &ahead)],
        )
        .await;
    assert_problem(s, &h, &b, 400);
    let cleared = set_cookie(&h, "ryw_lsn").map(|c| c.1).unwrap_or_default();
    assert!(
        cleared.contains("Max-Age=0"),
        "the cookie is cleared: {cleared:?}"
    );
    let cookie = format!("ryw_lsn={ahead}");
    let (s, h, b) = user
        .call_with(
            Method::GET,
            "/api/conversations",
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_problem(s, &h, &b, 400);
    // A real token of a real write still reads.
    let (_, h, _) = user
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "x"})),
        )
        .await;
    let real = h
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("token");
    let (s, _, _) = user
        .call_with(
            Method::GET,
            "/api/conversations",
            None,
            &[("x-consistency-token", real)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn tickets_and_resumes_are_bounded() {
    let user = register("bounds").await;
    let per_minute: usize = 30; // WS_TICKETS_PER_MINUTE's default
    let answers = futures_util::future::join_all(
        (0..per_minute + 3).map(|_| user.call(Method::POST, "/api/ws-ticket", None)),
    )
    .await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        answers.len() - refused.len(),
        per_minute,
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (s, h, b) in refused {
        assert_problem(*s, h, b, 429);
        assert!(h.get("retry-after").is_some());
    }

    // Sockets: at most WS_MAX_SOCKETS_PER_USER open at once (12 in the test stack), on
    // any instance; the next is refused before the upgrade.
    let holder = register("bounds_s").await;
    let mut open = Vec::new();
    for _ in 0..12 {
        open.push(socket_hello(&holder).await.0);
    }
    let (s, body) = holder.post("/api/ws-ticket", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let url = format!(
        "{}/ws?ticket={}",
        base().replacen("http", "ws", 1),
        body["ticket"].as_str().unwrap_or("")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429, "the 13th socket")
        }
        other => panic!("a 13th socket opened: {other:?}"),
    }
    drop(open);

    // Resume: a bounded number of frames per user, and of rows per frame (a reader of
    // two conversations of 40 messages each; the user above spent their tickets).
    let reader = register("bounds_r").await;
    let (o1, o2) = (register("bounds_1").await, register("bounds_2").await);
    let (c1, c2) = (reader.direct_with(&o1).await, reader.direct_with(&o2).await);
    for i in 0..40 {
        o1.send(&c1, &format!("one {i}")).await;
        o2.send(&c2, &format!("two {i}")).await;
    }
    // The budget's windows are whole minutes of the Unix epoch (`messaging::budget`): the
    // eleven frames below must fall into one, so they start early in a minute.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 60;
    if into_minute > 40 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let (mut ws, _) = socket_hello(&reader).await;
    send_frame(
        &mut ws,
        json!({"type": "resume", "cursors": {c1.clone(): 0, c2.clone(): 0}}),
    )
    .await;
    let mut replayed = 0;
    let mut reloads = 0;
    let mut done = 0;
    while done < 2 {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str() {
            Some("message.created") => replayed += 1,
            Some("resume.reload") => {
                reloads += 1;
                done += 1
            }
            Some("resumed") => done += 1,
            _ => {}
        }
    }
    let budget = 60; // RESUME_MAX_EVENTS_PER_FRAME in the test stack
    assert!(
        replayed <= budget,
        "{replayed} events replayed by one frame (budget {budget})"
    );
    assert!(
        reloads >= 1,
        "the conversation past the budget is answered resume.reload"
    );
    // That was the socket's first resume this minute; nine more go through, then none.
    for i in 1..=10 {
        send_frame(
            &mut ws,
            json!({"type": "resume", "cursors": {c1.clone(): 40}}),
        )
        .await;
        let f = loop {
            let f = next_frame(&mut ws).await;
            if f["type"] == "resumed" || f["type"] == "error" {
                break f;
            }
        };
        if i < 10 {
            assert_eq!(f["type"], "resumed", "resume {}: {f}", i + 1);
        } else {
            assert_eq!(
                f["type"],
                "error",
                "resume {} past the per-minute budget: {f}",
                i + 1
            );
        }
    }
}

#[tokio::test]
async fn upload_quotas_hold_in_total_and_per_window() {
    // The test stack: 1 MiB per file, 4 MiB stored, 6 MiB per window.
    let user = register("quota").await;
    let conv = user.direct_with(&register("quota2").await).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        let (s, b, _) = upload_bytes(&user, &conv, MIB).await;
        assert_eq!(s, StatusCode::CREATED, "file {i}: {b}");
        sent.push(b["id"].as_str().expect("id").to_owned());
    }
    let (s, b, h) = upload_bytes(&user, &conv, MIB).await;
    assert_problem(s, &h, &b, 413);
    // Deleting frees the stored bytes, not the window's.
    for id in &sent {
        let (s, _, _) = user
            .call(Method::DELETE, &format!("/api/messages/{id}"), None)
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    for i in 0..2 {
        let (s, b, _) = upload_bytes(&user, &conv, MIB).await;
        assert_eq!(s, StatusCode::CREATED, "file {i} after the deletes: {b}");
    }
    let (s, b, h) = upload_bytes(&user, &conv, MIB).await;
    assert_problem(s, &h, &b, 429);
    assert!(h.get("retry-after").is_some(), "{b}");
}

#[tokio::test]
async fn a_download_racing_a_delete_is_a_404_never_a_500() {
    let owner = register("race_dl").await;
    let conv = owner.direct_with(&register("race_dl2").await).await;
    for round in 0..3 {
        let (s, m, _) = upload_bytes(&owner, &conv, MIB - 1).await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        let file = m["attachment"]["id"]
            .as_str()
            .expect("attachment")
            .to_owned();
        let downloads = (0..24).map(|i| {
            let (owner, file) = (owner.clone(), file.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                http()
                    .get(format!("{}/api/attachments/{file}", base()))
                    .bearer_auth(&owner.access)
                    .header("range", "bytes=300000-900000")
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        let path = format!("/api/messages/{}", m["id"].as_str().unwrap_or(""));
        let delete = owner.call(Method::DELETE, &path, None);
        let (statuses, _) = tokio::join!(futures_util::future::join_all(downloads), delete);
        for s in statuses {
            let s = s.expect("answered");
            assert!(
                s == StatusCode::PARTIAL_CONTENT || s == StatusCode::NOT_FOUND,
                "round {round}: {s}"
            );
        }
    }
}

/// Runs a service binary with only `env` (no development switch) and returns its exit
/// status and output; it must exit on its own well within the timeout.
async fn start(binary: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut cmd = std::process::Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let pid = child.id();
    let waited = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(out) = waited else {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        panic!("{binary} kept running: it must refuse to start");
    };
    let out = out.expect("joined").expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[tokio::test]
async fn services_refuse_to_start_on_missing_short_or_placeholder_secrets() {
    let db = "postgres://switchboard_messaging:9fX2qLw8vB3nR5tY@127.0.0.1:1/switchboard";
    let random = "Zq9v1YtX8w3mB6nR2sK5pL0aF4hJ7cD1eG3iU8oT=";
    let example = "change-me-32-or-more-random-bytes-consistency";
    for (case, secret) in [
        ("missing", None),
        ("short", Some("sixteen-chars-ok")),
        ("placeholder", Some(example)),
    ] {
        let mut env = vec![
            ("MESSAGING_DATABASE_URL", db),
            ("MESSAGING_REPLICA_URL", db),
        ];
        if let Some(s) = secret {
            env.push(("CONSISTENCY_TOKEN_SECRET", s));
        }
        let (status, out) = start(env!("CARGO_BIN_EXE_messaging"), &env).await;
        assert!(!status.success(), "messaging started with a {case} secret");
        assert!(out.contains("CONSISTENCY_TOKEN_SECRET"), "{case}: {out}");
        assert!(
            !secret.is_some_and(|s| out.contains(s)),
            "{case}: the secret was logged"
        );
    }
    // The development database password is refused the same way.
    let dev_db = "postgres://switchboard_messaging:messaging-dev@127.0.0.1:1/switchboard";
    let (status, out) = start(
        env!("CARGO_BIN_EXE_messaging"),
        &[
            ("MESSAGING_DATABASE_URL", dev_db),
            ("CONSISTENCY_TOKEN_SECRET", random),
        ],
    )
    .await;
    assert!(
        !status.success() && out.contains("MESSAGING_DATABASE_URL"),
        "{out}"
    );
    // Auth: the refresh key is required and never derived from the signing key.
    let auth_db = "postgres://switchboard_auth:9fX2qLw8vB3nR5tY@127.0.0.1:1/switchboard";
    let (status, out) = start(
        env!("CARGO_BIN_EXE_auth"),
        &[("AUTH_DATABASE_URL", auth_db)],
    )
    .await;
    assert!(
        !status.success() && out.contains("REFRESH_TOKEN_SECRET"),
        "{out}"
    );
}
