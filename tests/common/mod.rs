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

static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the holder alone among the tests of its binary that also ask: for tests that stop or
/// pause servers, or count what the whole stack does in a window. Hold the guard for the
/// whole test.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The refresh cookie's name on the test stack, which runs as deployments do
/// (`COOKIE_SECURE=true`, scripts/test.sh).
pub const REFRESH_COOKIE: &str = "__Secure-refresh_token";

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
    let (cookie, _) = set_cookie(&h, REFRESH_COOKIE).expect("refresh cookie");
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

/// Every stored `seq` of a conversation, in order, read on the primary.
pub async fn stored_seqs(conversation: &str) -> Vec<i64> {
    let id: uuid::Uuid = conversation.parse().expect("uuid");
    admin(false)
        .await
        .query(
            "SELECT seq FROM messaging.messages WHERE conversation_id = $1 ORDER BY seq",
            &[&id],
        )
        .await
        .expect("seqs")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A superuser connection to the primary or the replica.
pub async fn admin(replica: bool) -> tokio_postgres::Client {
    let url = if replica {
        env(
            "SWITCHBOARD_REPLICA_ADMIN_URL",
            "postgres://postgres:postgres-dev@127.0.0.1:25433/switchboard",
        )
    } else {
        env(
            "SWITCHBOARD_PRIMARY_ADMIN_URL",
            "postgres://postgres:postgres-dev@127.0.0.1:25432/switchboard",
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
    /// `__Secure-refresh_token=<value>` as a browser would send it back.
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
    let (cookie, _) = set_cookie(res.headers(), REFRESH_COOKIE).expect("refresh cookie");
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

    /// Creates a group named `name` with `members` (the caller its admin); returns its id.
    pub async fn group(&self, members: &[&User], name: &str) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let (s, body) = self
            .post(
                "/api/conversations",
                json!({"participant_ids": ids, "name": name}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Mutes `conversation` for the caller (until 2099), or unmutes it; asserts 200.
    pub async fn mute(&self, conversation: &str, muted: bool) {
        let until = if muted {
            json!("2099-01-01T00:00:00Z")
        } else {
            Value::Null
        };
        let (s, _, body) = self
            .call(
                Method::PUT,
                &format!("/api/conversations/{conversation}/notifications"),
                Some(json!({"level": null, "muted_until": until})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
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
    frames_within(ws, &["message.created"], window).await
}

pub async fn send_frame(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string()))
        .await
        .expect("send frame");
}

/// Waits until `GET url` answers a success (a service's `readyz` once it has started);
/// panics after `timeout`.
pub async fn until_ready(url: &str, timeout: Duration) {
    eventually(timeout, || async {
        let ok = http()
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        ok.then_some(())
    })
    .await;
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

/// The messaging instances behind NGINX: `(name, direct URL)`.
pub fn instances() -> Vec<(String, String)> {
    env("SWITCHBOARD_MESSAGING_INSTANCES", "")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Opens a socket and returns it with its `hello` frame (which names the instance).
pub async fn socket_hello(user: &User) -> (Ws, Value) {
    let mut ws = user.socket().await;
    let hello = next_event(&mut ws, "hello", Duration::from_secs(5)).await;
    (ws, hello)
}

/// Opens a socket through NGINX that lands on `instance` (NGINX balances, so it retries).
pub async fn socket_on(user: &User, instance: &str) -> Ws {
    // NGINX skips an instance for 10 s after failing to reach it (max_fails=1), so after a
    // restart this may take a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let mut ws = user.socket().await;
        let hello = next_event(&mut ws, "hello", Duration::from_secs(5)).await;
        if hello["data"]["instance"] == instance {
            return ws;
        }
        drop(ws);
        // Round-robin pairs every ticket request with the next upgrade; one extra request
        // shifts the phase so the next socket lands on the other instance.
        let _ = http().get(format!("{}/api/healthz", base())).send().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no socket landed on {instance}");
}

/// A socket straight to `server` (NGINX's URL, or one instance's) whose TCP receive buffer is
/// 4 KiB: a client that stops reading backs up into the server within a few frames.
pub async fn small_buffer_socket_at(user: &User, server: &str) -> Ws {
    let url = ws_url(user, server).await;
    let addr = server
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .expect("http://ip:port");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("ws handshake");
    ws
}

/// A fresh ticket's socket URL on `server` (NGINX's URL or one instance's).
async fn ws_url(user: &User, server: &str) -> String {
    let (s, body) = user.post("/api/ws-ticket", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    format!(
        "{}/ws?ticket={}",
        server.replacen("http", "ws", 1),
        body["ticket"].as_str().expect("ticket")
    )
}

/// The next text frame, whatever its type; panics after 10 s.
pub async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("frame");
        if let WsMessage::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

/// A socket straight to one instance (bypassing NGINX, which would add its own buffers).
pub async fn socket_at(user: &User, server: &str) -> Ws {
    let url = ws_url(user, server).await;
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// The next frame of `kind` whose `data.user_id` is `user_id`.
pub async fn next_event_of(ws: &mut Ws, kind: &str, user_id: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let e = next_event(
            ws,
            kind,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await;
        if e["data"]["user_id"] == user_id {
            return e;
        }
    }
}

/// Reads until the server closes the socket; returns the close code (None when the
/// connection just ended) and the frames received before it.
pub async fn until_closed(ws: &mut Ws, timeout: Duration) -> (Option<u16>, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("socket not closed within {timeout:?}"),
            Ok(None) | Ok(Some(Err(_))) => return (None, frames),
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return (frame.map(|f| u16::from(f.code)), frames)
            }
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                frames.push(serde_json::from_str(&t).unwrap_or(Value::Null))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Every frame of `kinds` that arrives within `window`.
pub async fn frames_within(ws: &mut Ws, kinds: &[&str], window: Duration) -> Vec<Value> {
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
            if kinds.iter().any(|k| v["type"] == *k) {
                out.push(v);
            }
        }
    }
    out
}

/// A bearer request straight to one instance (bypassing NGINX's balancing).
pub async fn call_instance(
    user: &User,
    instance_url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http()
        .request(method, format!("{instance_url}{path}"))
        .bearer_auth(&user.access);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Asserts the socket is told its session ended and is closed with 4001, within a second of
/// the call (DESIGN.md §4).
pub async fn assert_revoked(ws: &mut Ws) {
    let (code, frames) = until_closed(ws, Duration::from_secs(1)).await;
    assert!(
        frames.iter().any(|f| f["type"] == "session.revoked"),
        "no session.revoked before the close ({code:?}): {frames:?}"
    );
    assert_eq!(code, Some(4001), "{frames:?}");
}

/// A mail the stack's SMTP server received (its Maildir, scripts/common.sh `start_smtp`).
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub message_id: String,
    /// `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 8058), empty when absent.
    pub list_unsubscribe: String,
    pub list_unsubscribe_post: String,
    pub text: String,
    pub html: String,
}

impl ReceivedMail {
    /// The token after `#<fragment>=` in the text body's link.
    pub fn link_token(&self, fragment: &str) -> String {
        let marker = format!("#{fragment}=");
        let start = self.text.find(&marker).map(|i| i + marker.len());
        let start = start.unwrap_or_else(|| panic!("no {marker} link in: {}", self.text));
        self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

fn parse_mail(bytes: &[u8]) -> Option<ReceivedMail> {
    let parsed = mailparse::parse_mail(bytes).ok()?;
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
            .unwrap_or_default()
    };
    let body = |mime: &str| {
        parsed
            .subparts
            .iter()
            .find(|p| p.ctype.mimetype == mime)
            .and_then(|p| p.get_body().ok())
            .unwrap_or_default()
    };
    Some(ReceivedMail {
        to: header("To"),
        from: header("From"),
        subject: header("Subject"),
        message_id: header("Message-ID"),
        list_unsubscribe: header("List-Unsubscribe"),
        list_unsubscribe_post: header("List-Unsubscribe-Post"),
        text: body("text/plain"),
        html: body("text/html"),
    })
}

/// Every mail received so far for `address`, oldest first.
pub fn mails_to(address: &str) -> Vec<ReceivedMail> {
    let dir = std::path::PathBuf::from(env("SWITCHBOARD_MAILDIR", ".data/test/mail"));
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|(_, path)| parse_mail(&std::fs::read(path).ok()?))
        .filter(|m| m.to.to_lowercase().contains(&address.to_lowercase()))
        .collect()
}

/// Waits (up to `timeout`) until `address` has received `count` mails; returns them all.
pub async fn await_mails(address: &str, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
    eventually(timeout, || async {
        let mails = mails_to(address);
        (mails.len() >= count).then_some(mails)
    })
    .await
}

// ---- the test push service ----

/// The test push service (scripts/push_service.py).
pub fn push_service_url() -> String {
    std::env::var("SWITCHBOARD_PUSH_URL").expect("scripts/test.sh sets SWITCHBOARD_PUSH_URL")
}

/// A browser subscription made at the push service: `(its id there, {endpoint, keys})`.
pub async fn browser_subscription() -> (String, Value) {
    let res = http()
        .post(format!("{}/subscriptions", push_service_url()))
        .send()
        .await
        .expect("push service");
    let body: Value = res.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    (
        id,
        json!({"endpoint": body["endpoint"], "keys": body["keys"]}),
    )
}

/// How the push service answers subscription `id`'s pushes from now on: with `status`,
/// each after `delay`.
pub async fn push_service_answers(id: &str, status: u16, delay: Duration) {
    let res = http()
        .put(format!("{}/subscriptions/{id}", push_service_url()))
        .json(&json!({"status": status, "delay_ms": delay.as_millis() as u64}))
        .send()
        .await
        .expect("push service");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

/// What the push service saw for subscription `id`: `{received: [...], refused: [...]}`.
pub async fn seen(id: &str) -> Value {
    http()
        .get(format!("{}/subscriptions/{id}", push_service_url()))
        .send()
        .await
        .expect("push service")
        .json()
        .await
        .expect("json")
}

/// A multipart upload through NGINX: PUT for an avatar, POST for a file into a
/// conversation; returns status, headers and the JSON body (Null when there is none).
pub async fn upload_form(
    user: &User,
    path: &str,
    form: reqwest::multipart::Form,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    // The avatar is a resource of its own (PUT); files are sent into conversations (POST).
    let method = if path.ends_with("/avatar") {
        Method::PUT
    } else {
        Method::POST
    };
    let res = http()
        .request(method, format!("{}{path}", base()))
        .bearer_auth(&user.access)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

/// Uploads `bytes` bytes as a file message of `user` in `conversation`; returns status, the
/// JSON body and the headers.
pub async fn upload_bytes(
    user: &User,
    conversation: &str,
    bytes: usize,
) -> (StatusCode, Value, HeaderMap) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![b'q'; bytes]).file_name("blob.bin"),
    );
    let (status, headers, body) = upload_form(
        user,
        &format!("/api/conversations/{conversation}/attachments"),
        form,
    )
    .await;
    (status, body, headers)
}

/// An auth service built in-process beside the stack's (same database, same SMTP server;
/// the two outbox workers share the outbox), with `extra` flags; its base URL.
pub async fn in_process_auth(extra: &[&str]) -> (String, tokio_util::sync::CancellationToken) {
    use switchboard::{platform::config, startup::App};
    let mut args = vec![
        "auth".to_owned(),
        "--bind=127.0.0.1:0".into(),
        "--metrics-bind=127.0.0.1:0".into(),
        format!(
            "--database-url={}",
            std::env::var("SWITCHBOARD_AUTH_DB_URL").expect("test.sh sets it")
        ),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let cfg: config::AuthConfig = config::try_parse_from(args).expect("flags parse");
    let app = App::build_auth(cfg.resolve().expect("settings resolve"))
        .await
        .expect("auth builds");
    let (url, stop) = (format!("http://127.0.0.1:{}", app.port()), app.stop_token());
    tokio::spawn(app.run_until_stopped());
    (url, stop)
}
