//! Accounts, public profiles and search, brute-force limits, CORS, and the token rules the
//! messaging service enforces.

use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn search(user: &User, q: &str) -> Vec<String> {
    let (s, body) = user.get(&format!("/auth/users?query={q}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_account_can_be_read_and_updated_with_clear_errors() {
    let a = register("me").await;
    let other = register("other").await;
    let (s, me) = a.get("/auth/me").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["username"], a.username.as_str());
    assert_eq!(me["email"], format!("{}@example.com", a.username));

    let (s, _, me) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"display_name": "  Ada L.  "})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["display_name"], "Ada L.");
    let (s, h, b) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": "not-an-email"})),
        )
        .await;
    assert_problem(s, &h, &b, 422);
    assert!(b["errors"]["email"].is_array(), "{b}");
    // A new address takes the password: without it 422, with a wrong one 403 (a stolen
    // token alone cannot move the account's mail, and with it its password resets).
    let elsewhere = format!("elsewhere_{}@example.com", a.username);
    let (s, h, b) = a
        .call(Method::PATCH, "/auth/me", Some(json!({"email": elsewhere})))
        .await;
    assert_problem(s, &h, &b, 422);
    assert!(b["errors"]["current_password"].is_array(), "{b}");
    let (s, h, b) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": elsewhere, "current_password": "not the password"})),
        )
        .await;
    assert_problem(s, &h, &b, 403);
    let (s, h, b) = a
        .call(Method::PATCH, "/auth/me", Some(json!({"display_name": ""})))
        .await;
    assert_problem(s, &h, &b, 422);
    // Asking for another account's email is answered like any email change (202), so the
    // endpoint tells nothing (tests/adversarial/limits.rs compares both answers).
    let taken = format!("{}@EXAMPLE.com", other.username);
    let (s, _, b) = a
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": taken, "current_password": a.password})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, h, b) = raw(Method::GET, "/auth/me", &[], None).await;
    assert_problem(s, &h, &b, 401);
}

#[tokio::test]
async fn search_is_a_case_insensitive_prefix_match_with_bounded_input() {
    let a = register("findme").await;
    let seeker = register("seeker").await;
    let prefix = a.username[..12].to_uppercase();
    assert!(search(&seeker, &prefix).await.contains(&a.username));
    assert!(
        search(&seeker, &a.username[3..]).await.is_empty(),
        "prefix, not substring"
    );
    assert!(
        search(&seeker, "%").await.is_empty(),
        "LIKE wildcards are literal"
    );
    let (s, body) = seeker.get(&format!("/auth/users/{}", a.id)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["active"], true);
    assert!(
        body.get("email").is_none(),
        "public profiles carry no email: {body}"
    );
    for q in [
        "/auth/users",
        "/auth/users?query=",
        "/auth/users?query=a&limit=0",
        "/auth/users?query=a&limit=51",
        // A NUL byte (found by the fuzzer: it used to reach PostgreSQL, a 500).
        "/auth/users?query=a%00b",
    ] {
        let (s, h, b) = seeker.call(Method::GET, q, None).await;
        assert_problem(s, &h, &b, 400);
    }
    let (s, h, b) = seeker
        .call(
            Method::GET,
            &format!("/auth/users/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_problem(s, &h, &b, 404);
}

#[tokio::test]
async fn a_deleted_account_cannot_sign_in_and_leaves_search() {
    let gone = register("gone").await;
    let seeker = register("seeker").await;
    let mut ws = gone.socket().await;
    assert!(search(&seeker, &gone.username)
        .await
        .contains(&gone.username));
    let (s, h, b) = gone
        .call(
            Method::DELETE,
            "/auth/me",
            Some(json!({"password": "wrong password"})),
        )
        .await;
    assert_problem(s, &h, &b, 403);
    let (s, h, _) = gone
        .call(
            Method::DELETE,
            "/auth/me",
            Some(json!({"password": gone.password})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, cleared) = set_cookie(&h, REFRESH_COOKIE).expect("cleared cookie");
    assert!(cleared.to_ascii_lowercase().contains("max-age=0"));
    assert_revoked(&mut ws).await;

    let (s, _, deleted) = login_from(&http(), &gone.username, &gone.password).await;
    let (_, _, unknown) =
        login_from(&http(), &format!("nobody_{}", unique()), &gone.password).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        deleted["detail"], unknown["detail"],
        "same answer as an unknown user"
    );
    let (s, _, _) = refresh(&gone.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(search(&seeker, &gone.username).await.is_empty());
    let (_, body) = seeker.get(&format!("/auth/users/{}", gone.id)).await;
    assert_eq!(body["active"], false, "{body}");
}

#[tokio::test]
async fn the_sixth_rapid_sign_in_from_one_address_gets_429_with_retry_after() {
    let client = http();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        // Different unknown names, so the per-login limit is not what answers.
        let r = login_from(&client, &format!("nobody_{}", unique()), "whatever123").await;
        statuses.push(r.0.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429]);
    let (s, h, b) = last.expect("six tries");
    assert_problem(s, &h, &b, 429);
    assert!(h.get("retry-after").is_some());
    // Another address is not affected.
    let (s, _, _) = login_from(&http(), &format!("nobody_{}", unique()), "whatever123").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failures_lock_the_login_name_known_or_not() {
    let user = register("locked").await;
    let unknown = format!("nobody_{}", unique());
    for name in [user.username.as_str(), unknown.as_str()] {
        for _ in 0..5 {
            let (s, _, _) = login_from(&http(), name, "not the password").await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
    }
    // Now even the right password waits; the unknown name answers exactly alike.
    let (s, h, b) = login_from(&http(), &user.username, &user.password).await;
    assert_problem(s, &h, &b, 429);
    let retry: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry > 0 && retry <= 300, "{retry}");
    let (s2, _, b2) = login_from(&http(), &unknown, "not the password").await;
    assert_eq!(s2, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(b["detail"], b2["detail"]);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_take_about_the_same_time() {
    const TRIES: usize = 25;
    let mut users = Vec::new();
    for _ in 0..TRIES {
        users.push(register("timing").await);
    }
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for u in &users {
        // Alternate which goes first so drift in machine load hits both alike.
        for first_wrong in [true, false] {
            let (name, bucket) = if first_wrong {
                (u.username.clone(), &mut wrong)
            } else {
                (format!("nobody_{}", unique()), &mut unknown)
            };
            let client = http();
            let started = Instant::now();
            let (s, _, _) = login_from(&client, &name, "not the password").await;
            bucket.push(started.elapsed().as_secs_f64());
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
    }
    let (w, u) = (median(wrong), median(unknown));
    let diff = (w - u).abs() / w.max(u);
    println!(
        "median login: wrong password {:.2} ms, unknown user {:.2} ms ({:.1}% apart)",
        w * 1e3,
        u * 1e3,
        diff * 100.0
    );
    assert!(diff < 0.2, "wrong password {w:.4}s vs unknown user {u:.4}s");
}

#[tokio::test]
async fn cors_allows_the_configured_origins_with_credentials_and_nothing_else() {
    let allowed = base().replace("127.0.0.1", "localhost");
    for path in ["/api/conversations", "/auth/refresh"] {
        let res = http()
            .request(Method::OPTIONS, format!("{}{path}", base()))
            .header("origin", &allowed)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-csrf",
            )
            .send()
            .await
            .expect("preflight");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let h = res.headers();
        assert_eq!(
            h.get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(allowed.as_str())
        );
        assert_eq!(
            h.get("access-control-allow-credentials")
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );

        let res = http()
            .request(Method::OPTIONS, format!("{}{path}", base()))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    // The avatar upload is a PUT; a download's ETag, name and range are readable by scripts.
    let res = http()
        .request(Method::OPTIONS, format!("{}/api/users/me/avatar", base()))
        .header("origin", &allowed)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(res.status().is_success(), "PUT preflight: {}", res.status());
    let methods = res
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(methods.contains("PUT"), "{methods}");
    let res = http()
        .get(format!("{}/api/healthz", base()))
        .header("origin", &allowed)
        .send()
        .await
        .expect("simple request");
    let exposed = res
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in [
        "etag",
        "content-disposition",
        "content-range",
        "x-consistency-token",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
}

fn signing_key() -> (jsonwebtoken::EncodingKey, Vec<u8>) {
    let path = std::env::var("AUTH_SIGNING_KEY_FILES").expect("set by scripts/test.sh");
    let pem = std::fs::read(path.split(',').next().unwrap_or_default()).expect("key file");
    (
        jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("Ed25519 key"),
        pem,
    )
}

/// Access token claims for `user`, valid from `iat` (also `nbf`) to `exp`.
fn claims_for(user: &User, iat: i64, exp: i64, iss: &str, aud: &str) -> Value {
    json!({"iss": iss, "aud": aud, "sub": user.id, "sid": uuid::Uuid::now_v7(),
           "iat": iat, "nbf": iat, "exp": exp, "jti": uuid::Uuid::now_v7()})
}

/// Claims that pass every check.
fn claims(user: &User) -> Value {
    let now = chrono::Utc::now().timestamp();
    claims_for(user, now, now + 300, "switchboard-auth", "switchboard")
}

async fn probe(token: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    raw(
        Method::GET,
        "/api/conversations",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let user = register("hs").await;
    let kid = jsonwebtoken::decode_header(&user.access)
        .expect("header")
        .kid;
    let (_, _, jwks) = raw(Method::GET, "/auth/.well-known/jwks.json", &[], None).await;
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    // The classic confusion attack: HMAC keyed with public material the attacker knows.
    for secret in [x.into_bytes(), signing_key().1] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = kid.clone();
        let token = jsonwebtoken::encode(
            &h,
            &claims(&user),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("sign");
        let (s, h, b) = probe(&token).await;
        assert_problem(s, &h, &b, 401);
    }
}

fn jwks_fetches() -> usize {
    let data = std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh");
    std::fs::read_to_string(format!("{data}/logs/auth.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("request served") && l.contains("/auth/.well-known/jwks.json"))
        .count()
}

#[tokio::test]
async fn unknown_kids_trigger_one_jwks_refresh_not_one_per_request() {
    let _exclusive = exclusive().await;
    let user = register("kid").await;
    let (key, _) = signing_key();
    // The stack runs with JWKS_MIN_REFRESH_SECS=1: let any earlier refresh age out first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = jwks_fetches();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(format!("unknown-{}", unique()));
        let token = jsonwebtoken::encode(&h, &claims(&user), &key).expect("sign");
        tasks.push(tokio::spawn(async move { probe(&token).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), StatusCode::UNAUTHORIZED);
    }
    let after = jwks_fetches();
    // One fetch per messaging instance that saw an unknown kid, however many it saw.
    let instances = std::env::var("SWITCHBOARD_MESSAGING_INSTANCES")
        .map(|v| v.split(',').count())
        .unwrap_or(1);
    let fetches = after - before;
    assert!(
        (1..=instances).contains(&fetches),
        "20 unknown kids within the interval: {fetches} JWKS fetches for {instances} instance(s)"
    );
}

#[tokio::test]
async fn bad_and_expired_access_tokens_are_refused_with_401() {
    let alice = register("alice").await;
    let kid = jsonwebtoken::decode_header(&alice.access)
        .expect("header")
        .kid;
    let now = chrono::Utc::now().timestamp();
    let (key, _) = signing_key();
    let sign = |c: Value| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = kid.clone();
        jsonwebtoken::encode(&h, &c, &key).expect("sign")
    };
    let (iss, aud) = ("switchboard-auth", "switchboard");
    let valid = sign(claims(&alice));
    let expired = sign(claims_for(&alice, now - 900, now - 600, iss, aud));
    let not_yet = sign(claims_for(&alice, now + 600, now + 900, iss, aud));
    let wrong_aud = sign(claims_for(&alice, now, now + 300, iss, "someone-else"));
    let wrong_iss = sign(claims_for(&alice, now, now + 300, "evil", aud));
    let alg_none = {
        use base64::Engine;
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims(&alice).to_string());
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body}.")
    };
    let mut tampered = alice.access.clone();
    tampered.push('x');

    let (s, _, b) = probe(&valid).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a well-formed token signed by the real key passes: {b}"
    );
    for bad in [
        expired,
        not_yet,
        wrong_aud,
        wrong_iss,
        alg_none,
        tampered,
        "garbage".into(),
    ] {
        let (s, h, b) = probe(&bad).await;
        assert_problem(s, &h, &b, 401);
        assert!(h.get("www-authenticate").is_some());
    }
}

/// Verified tokens are remembered (issue 16) but only until they expire: a token that
/// passed on every instance is refused on every instance once its `exp` (and the 30 s
/// leeway) passed.
#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let alice = register("expiring").await;
    let kid = jsonwebtoken::decode_header(&alice.access)
        .expect("header")
        .kid;
    let now = chrono::Utc::now().timestamp();
    let (key, _) = signing_key();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = kid;
    // Expired 27 s ago: within the leeway for about 3 s more.
    let claims = claims_for(
        &alice,
        now - 200,
        now - 27,
        "switchboard-auth",
        "switchboard",
    );
    let token = jsonwebtoken::encode(&h, &claims, &key).expect("sign");
    for _ in 0..4 {
        let (s, _, b) = probe(&token).await;
        assert_eq!(s, StatusCode::OK, "within the leeway: {b}");
    }
    let until = (now - 27 + 30 + 1 - chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_secs(until + 1)).await;
    for _ in 0..4 {
        let (s, h, b) = probe(&token).await;
        assert_problem(s, &h, &b, 401);
    }
}
