//! The account lifecycle through NGINX with mail read from the real SMTP server (issue 18):
//! verification at sign-up, an email change proven by the new address, and password reset.
//! Links are single-use and expiring; answers never say whether an address is registered.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const MAIL_WAIT: Duration = Duration::from_secs(15);

fn email_of(user: &User) -> String {
    format!("{}@example.com", user.username)
}

async fn post_json(path: &str, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    raw(
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(&body.to_string()),
    )
    .await
}

#[tokio::test]
async fn sign_up_mails_a_link_that_verifies_the_address_once() {
    let user = register("verify").await;
    let (_, me) = user.get("/auth/me").await;
    assert_eq!(me["email_verified"], false, "{me}");

    let mail = await_mails(&email_of(&user), 1, MAIL_WAIT).await.remove(0);
    assert_eq!(mail.subject, "Confirm your email address");
    assert!(mail.from.contains("Switchboard"), "{}", mail.from);
    assert!(
        mail.message_id.starts_with('<') && mail.message_id.contains('@'),
        "{}",
        mail.message_id
    );
    assert!(
        mail.html.contains("<a href="),
        "an HTML part with the link: {}",
        mail.html
    );
    let token = mail.link_token("verify-email");
    assert_eq!(token.len(), 43);
    assert!(mail.html.contains(&token));

    let (status, _, body) = post_json("/auth/email/verify", json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email_verified"], true);
    let (_, me) = user.get("/auth/me").await;
    assert_eq!(me["email_verified"], true);

    // Spent: the same link again, and links that never were, get one and the same 400.
    for bad in [token.as_str(), "not-a-token", ""] {
        let (status, headers, body) = post_json("/auth/email/verify", json!({"token": bad})).await;
        assert_problem(status, &headers, &body, 400);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("invalid")),
            "{body}"
        );
    }
    // Verified already: asking for a new link is a conflict.
    let (status, _, _) = user
        .call(Method::POST, "/auth/email/verification", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_expired_link_changes_nothing() {
    let user = register("expired").await;
    let token = await_mails(&email_of(&user), 1, MAIL_WAIT).await[0].link_token("verify-email");
    admin(false)
        .await
        .execute(
            "UPDATE auth.email_tokens SET expires_at = now() - interval '1 second'
             WHERE user_id = $1::text::uuid",
            &[&user.id],
        )
        .await
        .expect("expire the link");
    let (status, headers, body) = post_json("/auth/email/verify", json!({"token": token})).await;
    assert_problem(status, &headers, &body, 400);
    let (_, me) = user.get("/auth/me").await;
    assert_eq!(me["email_verified"], false);
    // A new link can be asked for, signed in or (as a locked-out user would) by address.
    let (status, _, body) = user
        .call(Method::POST, "/auth/email/verification", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = post_json(
        "/auth/email/verification",
        json!({"email": email_of(&user)}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mails = await_mails(&email_of(&user), 3, MAIL_WAIT).await;
    let fresh = mails[2].link_token("verify-email");
    let (status, _, body) = post_json("/auth/email/verify", json!({"token": fresh})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_new_address_takes_effect_only_once_it_confirms_and_the_old_one_is_told() {
    let user = register("rehome").await;
    let old = email_of(&user);
    let new = format!("new_{}@example.org", unique());
    let (status, _, body) = user
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": new, "current_password": user.password})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, me) = user.get("/auth/me").await;
    assert_eq!(
        me["email"],
        old.as_str(),
        "the address changed before it was proven"
    );

    // Asking for another account's address answers the same and mails nobody.
    let other = register("rehome_other").await;
    let (status, _, taken) = user
        .call(
            Method::PATCH,
            "/auth/me",
            Some(json!({"email": email_of(&other), "current_password": user.password})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(taken["detail"], body["detail"]);

    let mail = await_mails(&new, 1, MAIL_WAIT).await.remove(0);
    let (status, _, body) = post_json(
        "/auth/email/verify",
        json!({"token": mail.link_token("verify-email")}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["email"].as_str(), body["email_verified"].as_bool()),
        (Some(new.as_str()), Some(true))
    );

    let to_old = await_mails(&old, 2, MAIL_WAIT).await;
    assert_eq!(to_old[1].subject, "Your email address was changed");
    assert!(to_old[1].text.contains(&new));
    // The other account got only its own sign-up mail, never a link for this account.
    assert!(mails_to(&email_of(&other))
        .iter()
        .all(|m| !m.text.contains("sign-in address")));
    // Signing in works with the new address.
    let (status, _, _) = login_from(&http(), &new, &user.password).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_password_reset_answers_alike_for_unknown_addresses_and_ends_every_session() {
    let user = register("reset").await;
    let address = email_of(&user);
    let mut ws = user.socket().await;
    let _ = next_event(&mut ws, "hello", Duration::from_secs(5)).await;

    let (status, _, known) = post_json("/auth/password/forgot", json!({"email": address})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, unknown) = post_json(
        "/auth/password/forgot",
        json!({"email": format!("nobody_{}@example.com", unique())}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        known, unknown,
        "the answer tells whether the address is registered"
    );

    let mails = await_mails(&address, 2, MAIL_WAIT).await;
    let reset = mails
        .iter()
        .find(|m| m.subject == "Reset your password")
        .expect("reset mail");
    let token = reset.link_token("reset-password");

    // A password that does not qualify: 422, and the link still works afterwards.
    let (status, headers, body) = post_json(
        "/auth/password/reset",
        json!({"token": token, "new_password": "short"}),
    )
    .await;
    assert_problem(status, &headers, &body, 422);
    let new_password = "a much better password";
    let (status, _, body) = post_json(
        "/auth/password/reset",
        json!({"token": token, "new_password": new_password}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Every session ended: the socket is closed as revoked, the refresh cookie and the
    // access token stop working, the old password too.
    assert_revoked(&mut ws).await;
    let (status, _, _) = refresh(&user.refresh_cookie, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = user.get("/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = login_from(&http(), &user.username, &user.password).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = login_from(&http(), &user.username, new_password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["user"]["email_verified"], true,
        "the reset link proved the address"
    );

    // The link is spent; a notice went to the address.
    let (status, headers, body) = post_json(
        "/auth/password/reset",
        json!({"token": token, "new_password": "yet another password"}),
    )
    .await;
    assert_problem(status, &headers, &body, 400);
    let mails = await_mails(&address, 3, MAIL_WAIT).await;
    assert!(mails.iter().any(|m| m.subject == "Your password was reset"));
}

#[tokio::test]
async fn reset_mails_stop_at_the_hourly_budget_with_the_same_answer() {
    let user = register("budget").await;
    let address = email_of(&user);
    let mut answers = Vec::new();
    // ACCOUNT_MAIL_PER_HOUR (5) links; the sixth request answers the same and mails nothing.
    for _ in 0..6 {
        let client = http();
        let res = client
            .post(format!("{}/auth/password/forgot", base()))
            .json(&json!({"email": address}))
            .send()
            .await
            .expect("forgot");
        answers.push(res.status());
    }
    assert!(
        answers.iter().all(|s| *s == StatusCode::ACCEPTED),
        "{answers:?}"
    );
    let resets = |mails: Vec<ReceivedMail>| {
        mails
            .into_iter()
            .filter(|m| m.subject == "Reset your password")
            .count()
    };
    assert_eq!(resets(await_mails(&address, 6, MAIL_WAIT).await), 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(resets(mails_to(&address)), 5, "a sixth reset mail went out");
}

#[tokio::test]
async fn with_verification_required_sign_in_waits_for_the_link() {
    let (server, stop) = in_process_auth(&["--require-verified-email=true"]).await;
    let username = format!("strict_{}", unique());
    let address = format!("{username}@example.com");
    let password = "correct horse battery";
    let client = http();
    let res = client
        .post(format!("{server}/auth/register"))
        .json(&json!({"username": username, "email": address, "password": password}))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let login = || async {
        let res = client
            .post(format!("{server}/auth/login"))
            .json(&json!({"login": username, "password": password}))
            .send()
            .await
            .expect("login");
        let (status, headers) = (res.status(), res.headers().clone());
        (
            status,
            headers,
            res.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, headers, body) = login().await;
    assert_problem(status, &headers, &body, 403);
    // A wrong password is still a 401: the 403 comes only after the password checked out.
    let res = client
        .post(format!("{server}/auth/login"))
        .json(&json!({"login": username, "password": "wrong password here"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let token = await_mails(&address, 1, MAIL_WAIT).await[0].link_token("verify-email");
    let (status, _, body) = post_json("/auth/email/verify", json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = login().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stop.cancel();
}
