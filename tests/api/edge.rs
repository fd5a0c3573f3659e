//! The edge as browsers and load balancers meet it (issue 17): HTTPS with the local CA and a
//! `__Secure-` refresh cookie that a real cookie jar sends back only over HTTPS, HSTS, and
//! the client's address taken from `X-Forwarded-For` only when a trusted proxy sent it
//! (the test stack trusts 127.0.0.1 as its stand-in load balancer; every other loopback
//! address is an ordinary client).

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{header::HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

/// The stack by a name that is not loopback (cookie jars, like browsers, treat
/// `http://127.0.0.1` and `http://localhost` as secure contexts and would send a Secure
/// cookie there): `switchboard.test` (RFC 6761), resolved by the client to NGINX's address.
const HOST: &str = "switchboard.test";

/// `(https, http)` origins of the stack under [`HOST`].
fn origins() -> (String, String) {
    let port = |var: &str, default: &str| {
        let url = std::env::var(var).unwrap_or_else(|_| default.into());
        url.rsplit(':')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    };
    (
        format!(
            "https://{HOST}:{}",
            port("SWITCHBOARD_HTTPS_URL", "https://127.0.0.1:18443")
        ),
        format!(
            "http://{HOST}:{}",
            port("SWITCHBOARD_URL", "http://127.0.0.1:18080")
        ),
    )
}

/// A browser-like client: trusts only the test stack's CA, keeps cookies in a jar that
/// follows the cookie rules (Secure cookies only over HTTPS, Path, expiry).
fn browser() -> reqwest::Client {
    let ca_file =
        std::env::var("SWITCHBOARD_CA_FILE").expect("SWITCHBOARD_CA_FILE (scripts/test.sh)");
    let ca = std::fs::read(&ca_file).expect("the local CA");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
        .cookie_store(true)
        .resolve(HOST, std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .local_address(random_loopback())
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .expect("client")
}

async fn post_refresh(client: &reqwest::Client, origin: &str) -> (StatusCode, HeaderMap, Value) {
    let res = client
        .post(format!("{origin}/auth/refresh"))
        .header("x-csrf", "1")
        .send()
        .await
        .expect("refresh");
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_secure_refresh_cookie_refreshes_over_https_and_is_never_sent_over_http() {
    let client = browser();
    let (https, http) = origins();
    let username = format!("tls_{}", unique());
    let res = client
        .post(format!("{https}/auth/register"))
        .json(
            &json!({"username": username, "email": format!("{username}@example.com"),
                      "password": "correct horse battery"}),
        )
        .send()
        .await
        .expect("register over HTTPS");
    assert_eq!(res.status(), StatusCode::CREATED);
    let hsts = res
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok());
    assert!(
        hsts.is_some_and(|v| v.starts_with("max-age=")),
        "HSTS over HTTPS: {hsts:?}"
    );
    let (_, header) = set_cookie(res.headers(), REFRESH_COOKIE).expect("the __Secure- cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/auth"] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }

    // The jar sends the cookie back over HTTPS: refreshed, rotated, and refreshed again with
    // the successor the jar took from the answer.
    for round in 0..2 {
        let (status, headers, body) = post_refresh(&client, &https).await;
        assert_eq!(status, StatusCode::OK, "refresh {round} over HTTPS: {body}");
        assert!(body["access_token"].is_string());
        assert!(
            set_cookie(&headers, REFRESH_COOKIE).is_some(),
            "rotated cookie"
        );
    }

    // The same jar over plain HTTP to the same host: a Secure cookie stays home, so there is
    // nothing to refresh with — and no HSTS on a plain-HTTP answer.
    let (status, headers, _) = post_refresh(&client, &http).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a Secure cookie went over plain HTTP"
    );
    assert!(headers.get("strict-transport-security").is_none());
}

/// Signs in as `user` from `peer`, sending `forwarded` as X-Forwarded-For.
async fn sign_in_via(peer: IpAddr, forwarded: &str, user: &User) -> StatusCode {
    http_from(peer)
        .post(format!("{}/auth/login", base()))
        .header("x-forwarded-for", forwarded)
        .json(&json!({"login": user.username, "password": user.password}))
        .send()
        .await
        .expect("login")
        .status()
}

fn test_net_address() -> String {
    let [a, b]: [u8; 2] = rand::random();
    format!("203.0.{}.{}", 113 + a % 2, b.max(1))
}

#[tokio::test]
async fn the_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
    let user = register("edge_ip").await;
    let trusted = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let untrusted = random_loopback();
    let (client, spoofed) = (test_net_address(), "198.51.100.23");

    // Through the trusted proxy: the client is the last address the proxy appended; what the
    // client wrote itself before it (the leftmost entry) is ignored.
    assert_eq!(
        sign_in_via(trusted, &format!("{spoofed}, {client}"), &user).await,
        StatusCode::OK
    );
    // Straight from a client: its own X-Forwarded-For is ignored, the peer is the client.
    assert_eq!(sign_in_via(untrusted, spoofed, &user).await, StatusCode::OK);

    let (status, _, body) = user
        .call(reqwest::Method::GET, "/auth/sessions", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ips: Vec<&str> = body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["ip"].as_str())
        .collect();
    assert!(
        ips.contains(&client.as_str()),
        "the forwarded client's address: {ips:?}"
    );
    assert!(
        ips.contains(&untrusted.to_string().as_str()),
        "the untrusted peer's own address: {ips:?}"
    );
    assert!(
        !ips.contains(&spoofed),
        "a client chose its own address: {ips:?}"
    );
}

#[tokio::test]
async fn clients_behind_one_proxy_get_their_own_sign_in_brake() {
    // Behind a load balancer every request comes from the proxy; the brake (5 a minute,
    // burst 4) must still be per client, or one client's guesses lock everyone out. The
    // guesses name a different unknown account each, so only NGINX's brake can refuse them
    // (the auth service's own limit counts per account).
    let user = register("edge_brake").await;
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (guesser, mut bystander) = (test_net_address(), test_net_address());
    while bystander == guesser {
        bystander = test_net_address();
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let stranger = User {
            username: format!("nobody_{}", unique()),
            ..user.clone()
        };
        statuses.push(sign_in_via(proxy, &guesser, &stranger).await);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        sign_in_via(proxy, &bystander, &user).await,
        StatusCode::OK,
        "another client behind the same proxy was braked too"
    );
}
