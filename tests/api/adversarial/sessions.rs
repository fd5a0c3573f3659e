//! Sessions at their end (issue 14, item 1): an ended session's still-valid access token gets
//! no ticket, no socket and no reads on any instance; a socket lives no longer than its
//! access token unless the client presents a fresh one on it.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The JSON of a compact JWS's `part` (0: header, 1: claims).
fn jwt_part(token: &str, part: usize) -> Value {
    let text = token.split('.').nth(part).expect("JWT part");
    serde_json::from_slice(&B64.decode(text).expect("base64url")).expect("JSON")
}

/// A real access token of `user`'s session, re-signed with the auth service's own key (the
/// test stack's key file) to expire in `secs` seconds: what a client holds near the end of a
/// token's life.
fn expiring_token(user: &User, secs: i64) -> String {
    let header = jwt_part(&user.access, 0);
    let mut claims = jwt_part(&user.access, 1);
    claims["exp"] = json!(chrono::Utc::now().timestamp() + secs);
    let pem = std::fs::read(std::env::var("AUTH_SIGNING_KEY_FILES").expect("key file"))
        .expect("signing key");
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = header["kid"].as_str().map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("Ed25519 PEM");
    jsonwebtoken::encode(&h, &claims, &key).expect("sign")
}

fn holding(user: &User, token: String) -> User {
    User {
        access: token,
        ..user.clone()
    }
}

/// A ticket's socket URL, without opening it.
async fn ticket_url(user: &User) -> String {
    let (s, body) = user.post("/api/ws-ticket", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    format!(
        "{}/ws?ticket={}",
        base().replacen("http", "ws", 1),
        body["ticket"].as_str().expect("ticket")
    )
}

/// After `cause` ended `victim`'s session: every instance refuses its access token, no
/// ticket is issued, a ticket minted before the end opens nothing, and the open socket was
/// told and closed.
async fn assert_ended(cause: &str, victim: &User, ws: &mut Ws, early_ticket: &str) {
    assert_revoked(ws).await;
    let (s, h, b) = victim.call(Method::POST, "/api/ws-ticket", None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "{cause}: ticket for an ended session: {b}"
    );
    assert_problem(s, &h, &b, 401);
    match tokio_tungstenite::connect_async(early_ticket).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 401, "{cause}: early ticket")
        }
        other => panic!("{cause}: a ticket minted before the end opened a socket: {other:?}"),
    }
    // Every instance learns of the end from the bus; none serves the token afterwards.
    for (name, url) in instances() {
        let status = eventually(Duration::from_secs(2), || async {
            let (s, _) = call_instance(victim, &url, Method::GET, "/api/conversations", None).await;
            (s == StatusCode::UNAUTHORIZED).then_some(s)
        })
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cause}: {name}");
        let (s, body) = call_instance(victim, &url, Method::GET, "/api/search?q=x", None).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{cause}: {name} search: {body}"
        );
    }
}

#[tokio::test]
async fn an_ended_sessions_token_opens_and_reads_nothing_anywhere() {
    let a = register("endsess").await;
    let peer = register("endpeer").await;
    a.direct_with(&peer).await;
    let causes = [
        "logout",
        "revoked",
        "password change",
        "reuse",
        "account deletion",
    ];
    for cause in causes {
        let victim = second_session(&a).await;
        let (mut ws, _) = socket_hello(&victim).await;
        let early = ticket_url(&victim).await;
        match cause {
            "logout" => {
                let (s, _, _) = raw(
                    Method::POST,
                    "/auth/logout",
                    &[("cookie", &victim.refresh_cookie), ("x-csrf", "1")],
                    None,
                )
                .await;
                assert_eq!(s, StatusCode::NO_CONTENT);
            }
            "revoked" => {
                let (s, _, _) = a.call(Method::DELETE, "/auth/sessions", None).await;
                assert_eq!(s, StatusCode::OK);
            }
            "password change" => {
                let (s, _, b) = a
                    .call(
                        Method::POST,
                        "/auth/me/password",
                        Some(json!({"current_password": a.password, "new_password": a.password})),
                    )
                    .await;
                assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
            }
            "reuse" => {
                // Two rotations back is reuse (RFC 9700 §4.14): the family ends.
                let (_, h, _) = refresh(&victim.refresh_cookie, &[]).await;
                let t1 = set_cookie(&h, REFRESH_COOKIE).expect("rotated").0;
                let (s, _, _) = refresh(&t1, &[]).await;
                assert_eq!(s, StatusCode::OK);
                let (s, _, b) = refresh(&victim.refresh_cookie, &[]).await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "reuse: {b}");
            }
            _ => {
                let (s, _, b) = victim
                    .call(
                        Method::DELETE,
                        "/auth/me",
                        Some(json!({"password": a.password})),
                    )
                    .await;
                assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
            }
        }
        assert_ended(cause, &victim, &mut ws, &early).await;
    }
}

#[tokio::test]
async fn a_socket_closes_when_its_token_expires_unless_a_fresh_one_is_presented() {
    let user = register("tokenlife").await;
    // Left alone: closed with 4003 once the token behind its ticket expires.
    let short = holding(&user, expiring_token(&user, 3));
    let (mut ws, hello) = socket_hello(&short).await;
    let exp = jwt_part(&short.access, 1)["exp"].as_i64().expect("exp");
    assert_eq!(hello["data"]["token_expires_at"], exp, "{hello}");
    let (code, frames) = until_closed(&mut ws, Duration::from_secs(8)).await;
    assert_eq!(code, Some(4003), "{frames:?}");

    // Renewed on the socket: it lives past the first token's expiry.
    let short = holding(&user, expiring_token(&user, 3));
    let (mut ws, _) = socket_hello(&short).await;
    let other = register("otherlife").await;
    for (case, token) in [
        ("another user's token", other.access.clone()),
        ("garbage", "not.a.jwt".to_owned()),
    ] {
        send_frame(&mut ws, json!({"type": "auth", "access_token": token})).await;
        let e = next_event(&mut ws, "error", Duration::from_secs(5)).await;
        assert!(e["data"]["detail"].is_string(), "{case}: {e}");
    }
    send_frame(
        &mut ws,
        json!({"type": "auth", "access_token": user.access}),
    )
    .await;
    let ok = next_event(&mut ws, "auth.ok", Duration::from_secs(5)).await;
    assert_eq!(
        ok["data"]["expires_at"],
        jwt_part(&user.access, 1)["exp"],
        "{ok}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    send_frame(&mut ws, json!({"type": "ping"})).await;
    next_event(&mut ws, "pong", Duration::from_secs(5)).await;

    // A token that would outlive the instances' memory of ended sessions is refused.
    let long = holding(&user, expiring_token(&user, 3600));
    let (s, h, b) = long.call(Method::GET, "/api/conversations", None).await;
    assert_problem(s, &h, &b, 401);

    // A ticket asked for with a token about to expire opens nothing once it has.
    let dying = holding(&user, expiring_token(&user, 1));
    let url = ticket_url(&dying).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("a ticket outlived its token: {other:?}"),
    }
}
