//! Helpers for integration tests against the running stack (started by scripts/test.sh):
//! real HTTP and WebSocket clients through NGINX, and superuser connections to the real
//! primary and replica.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use futures_util::{SinkExt, StreamExt};
use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::{tungstenite::Message as WsMessage, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// NGINX, where every request goes.
pub fn base() -> String {
    env("SWITCHBOARD_URL", "http://127.0.0.1:18080")
}

/// A client connecting from a random loopback address (127.0.0.0/8), so NGINX's per-address
/// limits on sign-in and sign-up see each test as its own client.
pub fn http() -> reqwest::Client {
    http_from(random_loopback())
}

/// A client connecting from `ip` (any 127.x.y.z reaches NGINX on the loopback interface).
pub fn http_from(ip: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .local_address(ip)
        .build()
        .expect("client")
}

/// A random address in 127.0.0.0/8 other than 127.0.0.1.
pub fn random_loopback() -> std::net::IpAddr {
    let [a, b, c]: [u8; 3] = rand::random();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, a.max(1), b, c.clamp(2, 254)))
}

/// `POST /auth/login` from `client`.
pub async fn login_from(
    client: &reqwest::Client,
    login: &str,
    password: &str,
) -> (StatusCode, HeaderMap, Value) {
    let res = client
        .post(format!("{}/auth/login", base()))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .expect("login");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Signs in again as `user`: a second session (own access token and cookie).
pub async fn second_session(user: &User) -> User {
    let (s, h, body) = login_from(&http(), &user.username, &user.password).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (cookie, _) = set_cookie(&h, "refresh_token").expect("refresh cookie");
    User {
        access: body["access_token"].as_str().expect("token").to_owned(),
        refresh_cookie: cookie,
        ..user.clone()
    }
}

/// `POST /auth/refresh` with a cookie and the CSRF header (plus `extra` headers).
pub async fn refresh(cookie: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    let mut headers = vec![("cookie", cookie), ("x-csrf", "1")];
    headers.extend_from_slice(extra);
    raw(Method::POST, "/auth/refresh", &headers, None).await
}

/// A superuser connection to the primary or the replica.
pub async fn admin(replica: bool) -> tokio_postgres::Client {
    let url = if replica {
        env(
            "SWITCHBOARD_REPLICA_ADMIN_URL",
            "postgres://postgres:postgres-dev@127.0.0.1:56433/switchboard",
        )
    } else {
        env(
            "SWITCHBOARD_PRIMARY_ADMIN_URL",
            "postgres://postgres:postgres-dev@127.0.0.1:56432/switchboard",
        )
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
}

/// A unique suffix for usernames.
pub fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

/// A signed-in test user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password: String,
    pub access: String,
    /// `refresh_token=<value>` as a browser would send it back.
    pub refresh_cookie: String,
}

/// The `name=value` part of the `Set-Cookie` header for cookie `name`, and the whole header.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap_or("").trim().to_owned();
            (pair, v.to_owned())
        })
}

pub async fn register(prefix: &str) -> User {
    let username = format!("{prefix}_{}", unique());
    let password = "correct horse battery".to_owned();
    let res = http()
        .post(format!("{}/auth/register", base()))
        .json(&json!({
            "username": username,
            "email": format!("{username}@example.com"),
            "password": password,
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let (cookie, _) = set_cookie(res.headers(), "refresh_token").expect("refresh cookie");
    let body: Value = res.json().await.expect("json");
    User {
        id: body["user"]["id"].as_str().expect("id").to_owned(),
        username,
        password,
        access: body["access_token"].as_str().expect("token").to_owned(),
        refresh_cookie: cookie,
    }
}

impl User {
    /// A bearer-authenticated request through NGINX; returns status, headers and JSON body
    /// (Null when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = http()
            .request(method, format!("{}{}", base(), path))
            .bearer_auth(&self.access);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::GET, path, None).await;
        (s, b)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, b) = self.call(Method::POST, path, Some(body)).await;
        (s, b)
    }

    /// Creates (or finds) the direct conversation with `other`; returns its id.
    pub async fn direct_with(&self, other: &User) -> String {
        let (s, body) = self
            .post("/api/conversations", json!({"participant_ids": [other.id]}))
            .await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::OK,
            "{s} {body}"
        );
        body["id"].as_str().expect("id").to_owned()
    }

    /// Sends a text message; returns the message JSON.
    pub async fn send(&self, conversation: &str, content: &str) -> Value {
        let (s, body) = self
            .post(
                &format!("/api/conversations/{conversation}/messages"),
                json!({"content": content}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        body
    }

    /// Opens a WebSocket through NGINX with a fresh ticket.
    pub async fn socket(&self) -> Ws {
        let (s, body) = self.post("/api/ws-ticket", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let ticket = body["ticket"].as_str().expect("ticket");
        let url = format!("{}/ws?ticket={ticket}", base().replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        ws
    }
}

/// The next server frame of `kind`, skipping others; panics after `timeout`.
pub async fn next_event(ws: &mut Ws, kind: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event within {timeout:?}"))
            .expect("socket open")
            .expect("socket frame");
        if let WsMessage::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON frame");
            if v["type"] == kind {
                return v;
            }
        }
    }
}

/// Every `message.created` frame that arrives within `window`.
pub async fn messages_within(ws: &mut Ws, window: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(
        deadline.saturating_duration_since(tokio::time::Instant::now()),
        ws.next(),
    )
    .await
    {
        if let WsMessage::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON frame");
            if v["type"] == "message.created" {
                out.push(v);
            }
        }
    }
    out
}

pub async fn send_frame(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string()))
        .await
        .expect("send frame");
}

/// Retries `f` until it returns `Some`, for reads of another user's write that the replica
/// may not have replayed yet; panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts an RFC 9457 problem answer with `status`.
pub fn assert_problem(status: StatusCode, headers: &HeaderMap, body: &Value, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"], expected, "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert!(
        body["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{body}"
    );
}

/// A raw request without bearer auth.
pub async fn raw(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = http().request(method, format!("{}{}", base(), path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, json)
}
