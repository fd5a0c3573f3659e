//! The attack matrix: forged tokens, CSRF, strangers, foreign socket frames, tickets and
//! oversized input, each boundary attacked through NGINX with real HTTP and WebSocket clients.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::SinkExt;
use jsonwebtoken::{
    Algorithm::{self, EdDSA, HS256},
    EncodingKey,
};
use reqwest::{header::HeaderMap, multipart, Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(10);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const MIB: usize = 1024 * 1024;

type Answer = (StatusCode, HeaderMap, Value);

/// Asserts an RFC 9457 problem with `code`, naming `case` in every message.
fn expect_problem(case: &str, answer: &Answer, code: u16) {
    let (status, headers, body) = answer;
    assert_eq!(status.as_u16(), code, "{case}: {body}");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let problem = Some("application/problem+json");
    assert_eq!(content_type, problem, "{case}: {body}");
    assert_problem(*status, headers, body, code);
}

/// A 401 problem carrying the bearer challenge (RFC 6750 §3).
fn expect_unauthorized(case: &str, answer: &Answer) {
    expect_problem(case, answer, 401);
    let challenge = answer.1.get("www-authenticate");
    let bearer = challenge.is_some_and(|c| c.as_bytes().starts_with(b"Bearer "));
    assert!(bearer, "{case}: WWW-Authenticate {challenge:?}");
}

/// `"METHOD /path {json body}"` (the body optional) as `user`, through NGINX.
async fn attempt(user: &User, line: &str) -> Answer {
    let mut parts = line.splitn(3, ' ');
    let method = parts.next().unwrap_or_default().as_bytes();
    let method = Method::from_bytes(method).expect("method");
    let path = parts.next().expect("path");
    let body = parts.next().map(|b| serde_json::from_str(b).expect("JSON"));
    user.call(method, path, body).await
}

/// `user` holding `token` instead of their own access token.
fn holding(user: &User, token: &str) -> User {
    User {
        access: token.to_owned(),
        ..user.clone()
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().expect("id")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT payload");
    let json = B64.decode(payload).expect("base64url");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// An Ed25519 key of the attacker's own: PKCS#8 v1 (RFC 8410) around 32 random bytes.
fn attacker_key() -> EncodingKey {
    let mut der = vec![48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32];
    der.extend(rand::random::<[u8; 32]>());
    EncodingKey::from_ed_der(&der)
}

/// The stack's real signing key (scripts/test.sh names its file).
fn real_key() -> EncodingKey {
    let files = std::env::var("AUTH_SIGNING_KEY_FILES").expect("set by scripts/test.sh");
    let pem = std::fs::read(files.split(',').next().unwrap_or_default()).expect("key file");
    EncodingKey::from_ed_pem(&pem).expect("Ed25519 key")
}

fn sign(alg: Algorithm, kid: Option<String>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

async fn sessions(user: &User) -> Vec<Value> {
    let (s, body) = user.get("/auth/sessions").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["sessions"].as_array().expect("sessions").clone()
}

async fn current_session(user: &User) -> String {
    let all = sessions(user).await;
    let current = all.iter().find(|x| x["current"] == true).expect("current");
    id(current).to_owned()
}

async fn upload(user: &User, conv: &str) -> Answer {
    let file = multipart::Part::bytes(b"minutes: nothing to see\n".to_vec()).file_name("m.txt");
    let res = http()
        .post(format!("{}/api/conversations/{conv}/attachments", base()))
        .bearer_auth(&user.access)
        .multipart(multipart::Form::new().part("file", file))
        .send()
        .await
        .expect("upload");
    answer(res).await
}

async fn answer(res: reqwest::Response) -> Answer {
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// "user_id:role" of each current participant, sorted.
fn roster(details: &Value) -> Vec<String> {
    let list = details["participants"].as_array().expect("participants");
    let role = |p: &Value| format!("{}:{}", p["user_id"], p["role"]).replace('"', "");
    let mut all: Vec<String> = list.iter().map(role).collect();
    all.sort();
    all
}

/// The next frame that is not presence news (a socket also hears of its own user).
async fn next_answer(ws: &mut Ws) -> Value {
    loop {
        let frame = next_frame(ws).await;
        if frame["type"] != "presence" {
            return frame;
        }
    }
}

/// Asserts `GET /ws` at `url` is answered 401 (problem+json) before any upgrade.
async fn refused_upgrade(case: &str, url: &str) {
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(res)) => {
            assert_eq!(res.status(), 401, "{case}");
            let ct = res.headers().get("content-type").map(|v| v.as_bytes());
            assert_eq!(ct, Some(&b"application/problem+json"[..]), "{case}");
        }
        other => panic!("{case}: expected 401 before the upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn forged_access_tokens_are_refused_everywhere() {
    let alice = register("forge").await;
    let bob = register("forge").await;
    let parts: Vec<&str> = alice.access.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let (h, p, sig) = (parts[0], parts[1], parts[2]);
    let kid = jsonwebtoken::decode_header(&alice.access).expect("JWT").kid;
    let claims = claims_of(&alice.access);
    let (_, _, jwks) = raw(Method::GET, "/auth/.well-known/jwks.json", &[], None).await;
    let x = jwks["keys"][0]["x"].as_str().expect("JWKS x").to_owned();
    let raw_x = B64.decode(x.as_bytes()).expect("x");
    let now = chrono::Utc::now().timestamp();
    let mut stale = claims.clone();
    for (claim, at) in [("iat", now - 900), ("nbf", now - 900), ("exp", now - 600)] {
        stale[claim] = json!(at);
    }
    let mut as_bob = claims.clone();
    as_bob["sub"] = json!(bob.id);
    let mut chars: Vec<char> = p.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();

    let head = |v: Value| B64.encode(v.to_string());
    let none = head(json!({"alg": "none", "typ": "JWT"}));
    let none_kid = head(json!({"alg": "none", "typ": "JWT", "kid": kid}));
    let none_cap = head(json!({"alg": "None", "kid": kid}));
    let hs = |key: &[u8]| sign(HS256, kid.clone(), &claims, &EncodingKey::from_secret(key));
    let attacker = sign(EdDSA, kid.clone(), &claims, &attacker_key());
    let made_up = Some(format!("made-up-{}", unique()));
    let unknown_kid = sign(EdDSA, made_up, &claims, &real_key());
    let expired = sign(EdDSA, kid.clone(), &stale, &real_key());
    let jws = |h: &str, p: &str, sig: &str| format!("{h}.{p}.{sig}");
    let cases = [
        ("alg none, real claims", jws(&none, p, "")),
        ("alg none, the real kid", jws(&none_kid, p, "")),
        ("alg None, real signature", jws(&none_cap, p, sig)),
        ("the real token, signature cut", jws(h, p, "")),
        ("HS256 keyed with the JWKS x", hs(x.as_bytes())),
        ("HS256 keyed with the raw key", hs(raw_x.as_slice())),
        ("an attacker's key, real kid", attacker),
        ("the real key, made-up kid", unknown_kid),
        ("one payload byte changed", jws(h, &flipped, sig)),
        ("claims naming bob", jws(h, &head(as_bob), sig)),
        ("expired, the real key", expired),
    ];
    let probes = [
        "GET /api/conversations",
        "POST /api/ws-ticket",
        "GET /auth/me",
    ];
    for line in probes {
        let (s, _, body) = attempt(&alice, line).await;
        assert_eq!(s, StatusCode::OK, "the real token, {line}: {body}");
        for (case, token) in &cases {
            let r = attempt(&holding(&alice, token), line).await;
            expect_unauthorized(&format!("{case}, {line}"), &r);
        }
    }
}

#[tokio::test]
async fn an_unknown_kid_storm_is_answered_quickly() {
    let _exclusive = exclusive().await;
    let user = register("storm").await;
    let (claims, key) = (claims_of(&user.access), attacker_key());
    let started = Instant::now();
    let storm: Vec<_> = (0..100)
        .map(|i| {
            let kid = format!("storm-{}", B64.encode(rand::random::<[u8; 12]>()));
            let forged = holding(&user, &sign(EdDSA, Some(kid), &claims, &key));
            let line = ["GET /api/conversations", "GET /auth/me"][i % 2];
            tokio::spawn(async move { (line, attempt(&forged, line).await) })
        })
        .collect();
    for task in storm {
        let (line, r) = task.await.expect("task");
        expect_unauthorized(&format!("an unknown kid, {line}"), &r);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the storm took {took:?}");
    // Nothing is left wedged behind it: the real token is served at once.
    let started = Instant::now();
    let (s, body) = user.get("/api/conversations").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "then it took {took:?}");
}

#[tokio::test]
async fn csrf_variants_are_refused() {
    let user = register("csrf").await;
    let cookie = user.refresh_cookie.as_str();
    let allowed = base().replace("127.0.0.1", "localhost");
    let lookalike = format!("{allowed}.evil.example");
    let before = sessions(&user).await;
    let variants = [
        (None, None),
        (Some("0"), None),
        (Some("true"), None),
        (None, Some(allowed.as_str())),
        (Some("1"), Some("https://evil.example")),
        (Some("1"), Some("null")),
        (Some("1"), Some(lookalike.as_str())),
    ];
    for path in ["/auth/refresh", "/auth/logout"] {
        for (csrf, origin) in variants {
            let mut headers = vec![("cookie", cookie)];
            headers.extend(csrf.map(|v| ("x-csrf", v)));
            headers.extend(origin.map(|v| ("origin", v)));
            let r = raw(Method::POST, path, &headers, None).await;
            let case = format!("POST {path}, X-CSRF {csrf:?}, Origin {origin:?}");
            expect_problem(&case, &r, 403);
            let cookie_set = set_cookie(&r.1, REFRESH_COOKIE);
            assert!(cookie_set.is_none(), "{case}: the cookie was touched");
        }
    }
    // Nothing was rotated (last_used_at would move) or revoked (the session would go).
    let after = sessions(&user).await;
    assert_eq!(after, before, "the refused requests changed the session");
    let (s, h, body) = refresh(cookie, &[("origin", allowed.as_str())]).await;
    assert_eq!(s, StatusCode::OK, "the proper refresh: {body}");
    let (rotated, _) = set_cookie(&h, REFRESH_COOKIE).expect("rotated cookie");
    assert_ne!(rotated, user.refresh_cookie);
    let after = sessions(&user).await;
    assert_ne!(after, before, "a real refresh shows in the session");
    let proper = [("cookie", rotated.as_str()), ("x-csrf", "1")];
    let (s, _, body) = raw(Method::POST, "/auth/logout", &proper, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "the proper logout: {body}");
    let (s, _, _) = refresh(&rotated, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "logged out for real");
}

#[tokio::test]
async fn strangers_get_404_on_every_object_kind() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let mallory = register("mallory").await;
    let (me, b) = (&mallory.id, &bob.id);
    let group = json!({"participant_ids": [bob.id], "name": "Private"});
    let (s, created) = alice.post("/api/conversations", group).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let conv = id(&created).to_owned();
    let c = format!("/api/conversations/{conv}");
    let word = format!("quokka{}", unique());
    let text = alice.send(&conv, &format!("the {word} plan")).await;
    let agreed = json!({"content": "agreed", "reply_to": text["id"]});
    let (s, reply) = bob.post(&format!("{c}/messages"), agreed).await;
    assert_eq!(s, StatusCode::CREATED, "{reply}");
    let (s, _, file) = upload(&alice, &conv).await;
    assert_eq!(s, StatusCode::CREATED, "{file}");
    let attachment = format!("/api/attachments/{}", id(&file["attachment"]));
    let alice_sid = current_session(&alice).await;
    let search = format!("/api/search?q={word}&conversation_id={conv}");
    // Once the replica serves all of it to alice, every 404 below is the boundary, not lag.
    let everything = format!("{c}/messages?after=0&limit=100");
    let history = eventually(WAIT, || async {
        let (_, body) = alice.get(&everything).await;
        let msgs = body["messages"].as_array()?.clone();
        (msgs.len() == 3).then_some(msgs)
    })
    .await;
    eventually(WAIT, || async {
        let file_ok = alice.get(&attachment).await.0 == StatusCode::OK;
        let (_, found) = alice.get(&search).await;
        (file_ok && found["results"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;

    let mut lines = vec![
        format!("GET {c}"),
        format!(r#"PATCH {c} {{"name": "pwned"}}"#),
        format!("GET {c}/messages"),
        format!(r#"POST {c}/messages {{"content": "let me in"}}"#),
        format!(r#"POST {c}/read {{"seq": 1}}"#),
        format!(r#"POST {c}/participants {{"user_ids": ["{me}"]}}"#),
        format!("DELETE {c}/participants/{b}"),
        format!(r#"PATCH {c}/participants/{b} {{"role": "admin"}}"#),
        format!("POST {c}/leave"),
        format!("GET {attachment}"),
        format!("GET {search}"),
        format!("DELETE /auth/sessions/{alice_sid}"),
    ];
    for message in [&text, &reply, &file] {
        let m = format!("/api/messages/{}", id(message));
        lines.extend([
            format!(r#"PATCH {m} {{"content": "pwned"}}"#),
            format!("DELETE {m}"),
            format!("POST {m}/read {{}}"),
            format!("GET {m}/receipts"),
        ]);
    }
    for line in &lines {
        let r = attempt(&mallory, line).await;
        expect_problem(&format!("mallory: {line}"), &r, 404);
    }
    let r = upload(&mallory, &conv).await;
    expect_problem("mallory: POST …/attachments", &r, 404);
    let (_, list) = mallory.get("/api/conversations").await;
    let listed = list["conversations"].as_array().expect("conversations");
    assert!(listed.iter().all(|x| x["id"] != conv.as_str()), "{list}");
    let (_, found) = mallory.get(&format!("/api/search?q={word}")).await;
    assert_eq!(found["results"], json!([]), "{found}");

    // Nothing changed: alice's next message is seq 4 (no message, system or otherwise, was
    // added), and a read at her write's position shows the same three messages and roster.
    let after = format!(r#"POST {c}/messages {{"content": "after"}}"#);
    let (s, h, after) = attempt(&alice, &after).await;
    assert_eq!(s, StatusCode::CREATED, "{after}");
    assert_eq!(after["seq"], 4, "mallory's attempts appended nothing");
    let token = h.get("x-consistency-token").and_then(|v| v.to_str().ok());
    let ryw = [("x-consistency-token", token.expect("consistency token"))];
    let (_, _, page) = alice.call_with(Method::GET, &everything, None, &ryw).await;
    let msgs = page["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 4, "{page}");
    assert_eq!(&msgs[..3], history.as_slice(), "the messages changed");
    let (_, _, details) = alice.call_with(Method::GET, &c, None, &ryw).await;
    assert_eq!(details["name"], "Private", "{details}");
    let mut expected = vec![format!("{}:admin", alice.id), format!("{}:member", bob.id)];
    expected.sort();
    assert_eq!(roster(&details), expected, "{details}");
    let alive = sessions(&alice).await;
    assert!(alive.iter().any(|x| x["id"] == *alice_sid), "{alive:?}");
    let (s, _, body) = refresh(&alice.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::OK, "alice's session still refreshes: {body}");
}

#[tokio::test]
async fn foreign_socket_frames_do_nothing() {
    let alice = register("alice").await;
    let bob = register("bob").await;
    let mallory = register("mallory").await;
    let conv = alice.direct_with(&bob).await;
    alice.send(&conv, "for bob only").await;
    let (mut bob_ws, _) = socket_hello(&bob).await;
    let (mut alice_ws, _) = socket_hello(&alice).await;
    let (mut evil, _) = socket_hello(&mallory).await;
    let frames = |id: &str| {
        [
            json!({"type": "typing", "conversation_id": id, "is_typing": true}),
            json!({"type": "read", "conversation_id": id, "seq": 1}),
            json!({"type": "resume", "cursors": {id.to_owned(): 0}}),
        ]
    };
    // Each is answered exactly like the same frame naming a conversation that does not exist.
    let nowhere = uuid::Uuid::now_v7().to_string();
    for (foreign, missing) in frames(&conv).into_iter().zip(frames(&nowhere)) {
        let case = foreign["type"].clone();
        send_frame(&mut evil, foreign).await;
        let got = next_answer(&mut evil).await;
        assert_eq!(got["type"], "error", "{case}: {got}");
        send_frame(&mut evil, missing).await;
        let baseline = next_answer(&mut evil).await;
        assert_eq!(
            got["data"], baseline["data"],
            "{case}: unlike a missing one"
        );
    }
    send_frame(&mut evil, json!({"type": "ping"})).await;
    let pong = next_answer(&mut evil).await;
    assert_eq!(pong["type"], "pong", "mallory's socket stays open: {pong}");
    let window = Duration::from_millis(1500);
    let heard = frames_within(&mut bob_ws, &["typing", "read"], window).await;
    assert!(heard.is_empty(), "bob's socket heard mallory: {heard:?}");
    // The control: the same typing frame from a participant does reach bob.
    let typing = json!({"type": "typing", "conversation_id": conv, "is_typing": true});
    send_frame(&mut alice_ws, typing).await;
    next_event_of(&mut bob_ws, "typing", &alice.id, WAIT).await;
}

#[tokio::test]
async fn tickets_are_single_use_and_bound_to_their_user() {
    let alice = register("ticket").await;
    let bob = register("ticket").await;
    let ws = format!("{}/ws", base().replacen("http", "ws", 1));
    let mut opened = Vec::new();
    for user in [&alice, &bob] {
        let sid = current_session(user).await;
        let (s, body) = user.post("/api/ws-ticket", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let url = format!("{ws}?ticket={}", body["ticket"].as_str().expect("ticket"));
        let connected = tokio_tungstenite::connect_async(&url).await;
        let (mut socket, _) = connected.expect("a fresh ticket opens a socket");
        let hello = next_event(&mut socket, "hello", WAIT).await;
        let (owner, session) = (&hello["data"]["user_id"], &hello["data"]["session_id"]);
        assert_eq!(owner, user.id.as_str(), "the ticket's user: {hello}");
        assert_eq!(session, sid.as_str(), "the ticket's session: {hello}");
        opened.push((url, socket));
    }
    let (a, b) = (opened[0].0.clone(), opened[1].0.clone());
    let made_up = B64.encode(rand::random::<[u8; 32]>());
    let cases = [
        ("alice's ticket again, its socket open", a.clone()),
        ("bob's ticket again", b),
        ("a used ticket plus a character", format!("{a}A")),
        ("a made-up ticket", format!("{ws}?ticket={made_up}")),
        ("an empty ticket", format!("{ws}?ticket=")),
        ("no ticket", ws),
    ];
    for (case, url) in &cases {
        refused_upgrade(case, url).await;
    }
    drop(opened);
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused_upgrade("alice's ticket after its socket closed", &a).await;
}

#[tokio::test]
async fn oversized_bodies_and_frames_are_refused_cleanly() {
    let alice = register("big").await;
    let bob = register("big").await;
    let conv = alice.direct_with(&bob).await;
    let edit = format!("/api/messages/{}", id(&alice.send(&conv, "small").await));
    let send = format!("/api/conversations/{conv}/messages");
    // Whichever limit answers, it is a 413 problem, promptly (http() gives up after 15 s).
    let targets = [
        ("POST", send.as_str()),
        ("PATCH", edit.as_str()),
        ("POST", "/auth/login"),
    ];
    for (limit, size) in [("the JSON limit", 2 * MIB), ("NGINX's limit", 12 * MIB)] {
        let body = format!(r#"{{"content":"{}"}}"#, "x".repeat(size));
        for (method, path) in targets {
            let case = format!("{} bytes to {method} {path} ({limit})", body.len());
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let res = http()
                .request(method, format!("{}{path}", base()))
                .bearer_auth(&alice.access)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{case}: no clean answer: {e}"));
            expect_problem(&case, &answer(res).await, 413);
        }
    }
    alice.send(&conv, "still answering").await;

    // MESSAGE_MAX_CHARS counts characters, not bytes; edits are held to it too.
    for (case, content, fits) in [
        ("4000 ASCII characters", "x".repeat(4000), true),
        ("4001 ASCII characters", "x".repeat(4001), false),
        ("4000 emoji, 16000 bytes", "\u{1F600}".repeat(4000), true),
        ("4001 emoji", "\u{1F600}".repeat(4001), false),
        ("4001 two-byte characters", "\u{e9}".repeat(4001), false),
    ] {
        let body = Some(json!({"content": content}));
        let sent = alice.call(Method::POST, &send, body.clone()).await;
        let edited = alice.call(Method::PATCH, &edit, body).await;
        if fits {
            assert_eq!(sent.0, StatusCode::CREATED, "send {case}: {}", sent.2);
            assert_eq!(edited.0, StatusCode::OK, "edit to {case}: {}", edited.2);
        } else {
            expect_problem(&format!("send {case}"), &sent, 422);
            assert!(sent.2["errors"]["content"].is_array(), "{case}: {}", sent.2);
            expect_problem(&format!("edit to {case}"), &edited, 422);
        }
    }

    // Frames: exactly 16 KiB is served like any other; a byte more closes with 1009.
    let ping = json!({"type": "ping"}).to_string();
    let mut ws = alice.socket().await;
    let at_limit = WsMessage::Text(format!("{ping:<16384}"));
    ws.send(at_limit).await.expect("send");
    next_event(&mut ws, "pong", WAIT).await;
    let sockets = [ws, alice.socket().await, alice.socket().await];
    let frames = [
        ("16 KiB + 1 text", WsMessage::Text(format!("{ping:<16385}"))),
        ("20 KiB text", WsMessage::Text(format!("{ping:<20480}"))),
        ("20 KiB binary", WsMessage::Binary(vec![0; 20 * 1024])),
    ];
    for ((case, frame), mut ws) in frames.into_iter().zip(sockets) {
        ws.send(frame).await.expect("send");
        let (code, _) = until_closed(&mut ws, WAIT).await;
        assert_eq!(code, Some(1009), "{case}");
    }
    // The same message in two 12 KiB fragments (RFC 6455 §5.4): each is small, the whole
    // is not.
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let mut ws = alice.socket().await;
    let first = Frame::message(vec![b' '; 12 * 1024], OpCode::Data(Data::Text), false);
    let rest = Frame::message(vec![b' '; 12 * 1024], OpCode::Data(Data::Continue), true);
    ws.send(WsMessage::Frame(first)).await.expect("send");
    ws.send(WsMessage::Frame(rest)).await.expect("send");
    let (code, _) = until_closed(&mut ws, WAIT).await;
    assert_eq!(code, Some(1009), "two fragments adding up past 16 KiB");
}
