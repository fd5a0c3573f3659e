//! Auth through NGINX: cookies, rotation, CSRF, logout, and bad input.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn register_and_login_set_the_refresh_cookie_with_the_right_attributes() {
    let user = register("cookie").await;
    let res = http()
        .post(format!("{}/auth/login", base()))
        .json(&json!({"login": user.username.to_uppercase(), "password": user.password}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let (_, header) = set_cookie(res.headers(), REFRESH_COOKIE).expect("cookie on login");
    let attrs: Vec<String> = header
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attrs.contains(&"httponly".to_owned()), "{header}");
    assert!(attrs.contains(&"samesite=strict".to_owned()), "{header}");
    assert!(attrs.contains(&"path=/auth".to_owned()), "{header}");
    assert!(attrs.iter().any(|a| a.starts_with("max-age=")), "{header}");
    let value = header
        .split(';')
        .next()
        .unwrap_or("")
        .trim_start_matches(REFRESH_COOKIE)
        .trim_start_matches('=');
    assert!(
        value.len() >= 43,
        "refresh token must carry at least 256 bits: {value}"
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["user"]["username"], user.username);
    // The token is an EdDSA JWT with a kid the JWKS publishes.
    let token = body["access_token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let (_, _, jwks) = raw(Method::GET, "/auth/.well-known/jwks.json", &[], None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&header.kid.as_deref().expect("kid")),
        "{jwks}"
    );
    // Register's cookie has the same shape.
    assert!(user
        .refresh_cookie
        .starts_with(&format!("{REFRESH_COOKIE}=")));
}

#[tokio::test]
async fn refresh_rotates_the_cookie_and_the_old_token_then_fails() {
    let user = register("rotate").await;
    let (status, headers, body) = refresh(&user.refresh_cookie, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
    assert_eq!(body["user"]["id"], user.id.as_str());
    let (rotated, _) = set_cookie(&headers, REFRESH_COOKIE).expect("rotated cookie");
    assert_ne!(rotated, user.refresh_cookie);

    // The new token works once...
    let (status, headers, _) = refresh(&rotated, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (newest, _) = set_cookie(&headers, REFRESH_COOKIE).expect("cookie");

    // ...the old one is refused and its cookie cleared; presenting it is reuse, which
    // revokes the whole session, so even the newest token stops working.
    let (status, headers, body) = refresh(&user.refresh_cookie, &[]).await;
    assert_problem(status, &headers, &body, 401);
    let (_, cleared) = set_cookie(&headers, REFRESH_COOKIE).expect("cleared cookie");
    assert!(
        cleared.to_ascii_lowercase().contains("max-age=0"),
        "{cleared}"
    );
    let (status, _, _) = refresh(&newest, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_and_logout_require_the_csrf_header_and_an_allowed_origin() {
    let user = register("csrf").await;
    for path in ["/auth/refresh", "/auth/logout"] {
        let (s, h, b) = raw(
            Method::POST,
            path,
            &[("cookie", &user.refresh_cookie)],
            None,
        )
        .await;
        assert_problem(s, &h, &b, 403);
        let (s, h, b) = raw(
            Method::POST,
            path,
            &[
                ("cookie", &user.refresh_cookie),
                ("x-csrf", "1"),
                ("origin", "https://evil.example"),
            ],
            None,
        )
        .await;
        assert_problem(s, &h, &b, 403);
    }
    // The cookie still works from an allowed origin: nothing above consumed it.
    let origin = base().replace("127.0.0.1", "localhost");
    let (s, _, b) = refresh(&user.refresh_cookie, &[("origin", &origin)]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn logout(cookie: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let headers = [("cookie", cookie), ("x-csrf", "1")];
    raw(Method::POST, "/auth/logout", &headers, None).await
}

#[tokio::test]
async fn logout_clears_the_cookie_revokes_the_session_closes_its_socket_and_is_idempotent() {
    let user = register("logout").await;
    let mut ws = user.socket().await;
    let (s, h, _) = logout(&user.refresh_cookie).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, cleared) = set_cookie(&h, REFRESH_COOKIE).expect("cleared cookie");
    assert!(
        cleared.to_ascii_lowercase().contains("max-age=0"),
        "{cleared}"
    );
    // The session's socket is told and closed (within a second, DESIGN.md §4).
    assert_revoked(&mut ws).await;
    let (s, _, _) = refresh(&user.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = logout(&user.refresh_cookie).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let user = register("login").await;
    let login = |login: String, password: &'static str| async move {
        let body = json!({"login": login, "password": password}).to_string();
        let ct = [("content-type", "application/json")];
        raw(Method::POST, "/auth/login", &ct, Some(&body)).await
    };
    let wrong = login(user.username.clone(), "not the password").await;
    let unknown = login(format!("nobody_{}", unique()), "whatever123").await;
    assert_problem(wrong.0, &wrong.1, &wrong.2, 401);
    assert_problem(unknown.0, &unknown.1, &unknown.2, 401);
    assert_eq!(wrong.2["detail"], unknown.2["detail"]);
    assert!(set_cookie(&wrong.1, REFRESH_COOKIE).is_none());
}

#[tokio::test]
async fn bad_registration_input_is_a_clear_4xx() {
    let json_ct = [("content-type", "application/json")];
    let (s, h, b) = raw(Method::POST, "/auth/register", &json_ct, Some("{not json")).await;
    assert_problem(s, &h, &b, 400);
    let (s, h, b) = raw(
        Method::POST,
        "/auth/register",
        &json_ct,
        Some(r#"{"username":"x"}"#),
    )
    .await;
    assert_problem(s, &h, &b, 422);
    let (s, h, b) = raw(Method::POST, "/auth/register", &[], Some(r#"{}"#)).await;
    assert_problem(s, &h, &b, 415);
    // A NUL in a sign-in name is bad input, never a server error.
    let nul = json!({"login": "a\u{0}b", "password": "whatever123"}).to_string();
    let (s, h, b) = raw(Method::POST, "/auth/login", &json_ct, Some(&nul)).await;
    assert_problem(s, &h, &b, 400);
    let bad = json!({"username": "a b", "email": "nope", "password": "short"}).to_string();
    let (s, h, b) = raw(Method::POST, "/auth/register", &json_ct, Some(&bad)).await;
    assert_problem(s, &h, &b, 422);
    for field in ["username", "email", "password"] {
        assert!(b["errors"][field].is_array(), "{field} missing in {b}");
    }
    // bcrypt's 72-byte limit: rejected, never truncated.
    let long = json!({
        "username": format!("long_{}", unique()),
        "email": format!("long_{}@example.com", unique()),
        "password": "é".repeat(40),
    })
    .to_string();
    let (s, h, b) = raw(Method::POST, "/auth/register", &json_ct, Some(&long)).await;
    assert_problem(s, &h, &b, 422);
    assert!(
        b["errors"]["password"][0]
            .as_str()
            .unwrap_or("")
            .contains("72"),
        "{b}"
    );

    // Taken username (case-insensitive) and email: 409.
    let user = register("taken").await;
    let dup = json!({
        "username": user.username.to_uppercase(),
        "email": format!("other_{}@example.com", unique()),
        "password": "correct horse battery",
    })
    .to_string();
    let (s, h, b) = raw(Method::POST, "/auth/register", &json_ct, Some(&dup)).await;
    assert_problem(s, &h, &b, 409);
    let dup = json!({
        "username": format!("other_{}", unique()),
        "email": format!("{}@EXAMPLE.com", user.username),
        "password": "correct horse battery",
    })
    .to_string();
    let (s, h, b) = raw(Method::POST, "/auth/register", &json_ct, Some(&dup)).await;
    assert_problem(s, &h, &b, 409);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json() {
    let (s, h, b) = raw(Method::GET, "/auth/nope", &[], None).await;
    assert_problem(s, &h, &b, 404);
    let (s, h, b) = raw(Method::GET, "/auth/login", &[], None).await;
    assert_eq!(s.as_u16(), 405, "{b}");
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let (s, _, b) = raw(Method::GET, "/elsewhere", &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}
