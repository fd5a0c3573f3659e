//! Sessions and refresh token rotation through NGINX: grace window, reuse, listing and
//! revoking sessions, password change.

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

fn cookie_of(headers: &reqwest::header::HeaderMap) -> String {
    set_cookie(headers, REFRESH_COOKIE)
        .expect("refresh cookie")
        .0
}

#[tokio::test]
async fn two_tabs_refreshing_at_once_get_the_same_successor() {
    let user = register("tabs").await;
    let (a, b) = tokio::join!(
        refresh(&user.refresh_cookie, &[]),
        refresh(&user.refresh_cookie, &[])
    );
    assert_eq!(a.0, StatusCode::OK, "{}", a.2);
    assert_eq!(b.0, StatusCode::OK, "{}", b.2);
    let (ca, cb) = (cookie_of(&a.1), cookie_of(&b.1));
    assert_eq!(ca, cb, "the grace window hands back the same successor");
    assert_ne!(ca, user.refresh_cookie);
    // The family goes on from that successor.
    let (s, h, _) = refresh(&ca, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(cookie_of(&h), ca);
}

#[tokio::test]
async fn an_older_token_is_reuse_even_within_the_grace_window() {
    let user = register("older").await;
    let (_, h1, _) = refresh(&user.refresh_cookie, &[]).await;
    let t1 = cookie_of(&h1);
    let (s, h2, _) = refresh(&t1, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let t2 = cookie_of(&h2);
    // t0 is two rotations back: its successor t1 is already used, so no grace.
    let (s, h, b) = refresh(&user.refresh_cookie, &[]).await;
    assert_problem(s, &h, &b, 401);
    assert!(b["detail"].as_str().unwrap_or("").contains("reuse"), "{b}");
    // Reuse revoked the whole family: the newest token fails too, and so does its socket.
    let (s, _, _) = refresh(&t2, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = user.get("/auth/me").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "auth refuses access tokens of ended sessions"
    );
}

#[tokio::test]
async fn sessions_are_listed_with_the_current_one_flagged_and_can_be_revoked() {
    let a = register("sess").await;
    let b = second_session(&a).await;
    let c = second_session(&a).await;
    let (s, body) = a.get("/auth/sessions").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let sessions = body["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 3, "{body}");
    assert_eq!(sessions.iter().filter(|x| x["current"] == true).count(), 1);
    for x in &sessions {
        assert!(
            x["created_at"].is_string() && x["last_used_at"].is_string() && x["ip"].is_string(),
            "{x}"
        );
    }
    let (_, b_view) = b.get("/auth/sessions").await;
    let b_id = b_view["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|x| x["current"] == true)
        .and_then(|x| x["id"].as_str())
        .expect("current id")
        .to_owned();

    // Someone else cannot see or end these sessions.
    let stranger = register("stranger").await;
    let (s, h, body) = stranger
        .call(Method::DELETE, &format!("/auth/sessions/{b_id}"), None)
        .await;
    assert_problem(s, &h, &body, 404);

    let mut b_ws = b.socket().await;
    let (s, _, _) = a
        .call(Method::DELETE, &format!("/auth/sessions/{b_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_revoked(&mut b_ws).await;
    let (s, _, _) = refresh(&b.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, _, body) = a.call(Method::DELETE, "/auth/sessions", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["revoked"], 1,
        "only c was left besides the current one"
    );
    let (s, _, _) = refresh(&c.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = refresh(&a.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::OK, "the current session survives");
}

#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let a = register("pw").await;
    let b = second_session(&a).await;
    let mut b_ws = b.socket().await;
    let path = "/auth/me/password";
    let (s, h, body) = a
        .call(
            Method::POST,
            path,
            Some(json!({"current_password": "wrong one!", "new_password": "a new horse battery"})),
        )
        .await;
    assert_problem(s, &h, &body, 403);
    let (s, h, body) = a
        .call(
            Method::POST,
            path,
            Some(json!({"current_password": a.password, "new_password": "short"})),
        )
        .await;
    assert_problem(s, &h, &body, 422);
    assert!(body["errors"]["new_password"].is_array(), "{body}");
    let (s, _, body) = a
        .call(
            Method::POST,
            path,
            Some(json!({"current_password": a.password, "new_password": "a new horse battery"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");

    assert_revoked(&mut b_ws).await;
    let (s, _, _) = refresh(&b.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = refresh(&a.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = login_from(&http(), &a.username, &a.password).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = login_from(&http(), &a.username, "a new horse battery").await;
    assert_eq!(s, StatusCode::OK);
}
