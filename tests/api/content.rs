//! Message content through NGINX: edits, deletes, replies, receipts, search, attachments,
//! avatars and the send rate limit.

use std::time::Duration;

use crate::common::*;
use reqwest::{multipart, Method, StatusCode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn group(owner: &User, members: &[&User]) -> String {
    owner.group(members, "Group").await
}

fn file_part(bytes: Vec<u8>, name: &str, claimed: &str) -> multipart::Part {
    multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(claimed)
        .expect("mime")
}

async fn fetch(user: &User, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .get(format!("{}{path}", base()))
        .bearer_auth(&user.access);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.expect("download")
}

#[tokio::test]
async fn only_the_sender_edits_and_everyone_sees_the_edit() {
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;
    let msg = a.send(&conv, "frist").await;
    let path = format!("/api/messages/{}", msg["id"].as_str().unwrap_or(""));
    let mut b_ws = b.socket().await;

    let (s, h, body) = b
        .call(Method::PATCH, &path, Some(json!({"content": "hijack"})))
        .await;
    assert_problem(s, &h, &body, 403);
    let (s, h, body) = a
        .call(Method::PATCH, &path, Some(json!({"content": " "})))
        .await;
    assert_problem(s, &h, &body, 422);
    let (s, _, edited) = a
        .call(Method::PATCH, &path, Some(json!({"content": "first"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{edited}");
    assert_eq!(edited["content"], "first");
    assert!(edited["edited_at"].is_string());
    assert_eq!(edited["seq"], msg["seq"]);
    let e = next_event(&mut b_ws, "message.edited", WAIT).await;
    assert_eq!(e["data"]["content"], "first");

    let (s, _, _) = a.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, h, body) = a
        .call(Method::PATCH, &path, Some(json!({"content": "again"})))
        .await;
    assert_problem(s, &h, &body, 409);
    let stranger = register("stranger").await;
    let (s, h, body) = stranger
        .call(Method::PATCH, &path, Some(json!({"content": "x"})))
        .await;
    assert_problem(s, &h, &body, 404);
}

#[tokio::test]
async fn deletes_by_sender_or_admin_leave_a_tombstone_and_erase_the_content() {
    let admin = register("admin").await;
    let b = register("b").await;
    let c = register("c").await;
    let conv = group(&admin, &[&b, &c]).await;
    let secret = format!("zanzibar{}", unique());
    let msg = b.send(&conv, &format!("the code is {secret}")).await;
    let id = msg["id"].as_str().expect("id").to_owned();
    let path = format!("/api/messages/{id}");
    let mut c_ws = c.socket().await;

    let (s, h, body) = c.call(Method::DELETE, &path, None).await;
    assert_problem(s, &h, &body, 403);
    let (s, _, _) = admin.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let e = next_event(&mut c_ws, "message.deleted", WAIT).await;
    assert_eq!(e["seq"], msg["seq"]);
    assert_eq!(e["data"]["deleted"], true);
    assert!(e["data"]["content"].is_null());
    let (s, _, _) = b.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "deleting again is fine");

    let page = eventually(WAIT, || async {
        let (_, page) = c.get(&format!("/api/conversations/{conv}/messages")).await;
        (page["messages"][0]["deleted"] == true).then_some(page)
    })
    .await;
    assert_eq!(
        page["messages"][0]["seq"], msg["seq"],
        "the tombstone keeps its seq"
    );
    assert!(page["messages"][0]["content"].is_null());
    let (_, found) = c.get(&format!("/api/search?q={secret}")).await;
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(0),
        "{found}"
    );
    // Gone from storage, not just hidden.
    let primary = admin_db().await;
    let row = primary
        .query_one(
            "SELECT content, search::text FROM messaging.messages WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .expect("row");
    assert!(row.get::<_, Option<String>>(0).is_none());
    assert!(!row.get::<_, String>(1).contains("zanzibar"));
}

async fn admin_db() -> tokio_postgres::Client {
    admin(false).await
}

#[tokio::test]
async fn replies_quote_their_parent_and_must_stay_in_the_conversation() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let conv = a.direct_with(&b).await;
    let other = a.direct_with(&c).await;
    let long = "x".repeat(300);
    let parent = a.send(&conv, &long).await;
    let elsewhere = a.send(&other, "elsewhere").await;
    let (s, reply) = b
        .post(
            &format!("/api/conversations/{conv}/messages"),
            json!({"content": "agreed", "reply_to": parent["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["reply_to"], parent["id"]);
    assert_eq!(reply["quote"]["id"], parent["id"]);
    assert_eq!(reply["quote"]["sender_id"], a.id.as_str());
    assert_eq!(
        reply["quote"]["excerpt"]
            .as_str()
            .map(|s| s.chars().count()),
        Some(140)
    );
    let (s, h, body) = b
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "x", "reply_to": elsewhere["id"]})),
        )
        .await;
    assert_problem(s, &h, &body, 422);
}

#[tokio::test]
async fn receipts_are_derived_from_read_markers() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let conv = group(&a, &[&b, &c]).await;
    let msg = a.send(&conv, "did you read this?").await;
    let path = format!(
        "/api/messages/{}/receipts",
        msg["id"].as_str().unwrap_or("")
    );
    let names = |v: &Value, k: &str| -> Vec<String> {
        let mut n: Vec<String> = v[k]
            .as_array()
            .expect(k)
            .iter()
            .filter_map(|r| r["user_id"].as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    // The replica may not have the message yet (no consistency token here): wait for it.
    let r = eventually(WAIT, || async {
        let (s, _, r) = a.call_with(Method::GET, &path, None, &[]).await;
        (s == StatusCode::OK).then_some(r)
    })
    .await;
    let mut both = vec![b.id.clone(), c.id.clone()];
    both.sort();
    assert_eq!(names(&r, "not_read_by"), both);
    assert!(names(&r, "read_by").is_empty());
    let (_, h, _) = b
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/read"),
            Some(json!({"seq": msg["seq"]})),
        )
        .await;
    let token = h
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("token")
        .to_owned();
    // B's own token makes B's read visible to B at once; A waits for the replica.
    let (_, _, r) = b
        .call_with(Method::GET, &path, None, &[("x-consistency-token", &token)])
        .await;
    assert_eq!(names(&r, "read_by"), vec![b.id.clone()]);
    let r = eventually(WAIT, || async {
        let (_, _, r) = a.call(Method::GET, &path, None).await;
        (names(&r, "read_by") == vec![b.id.clone()]).then_some(r)
    })
    .await;
    assert_eq!(names(&r, "not_read_by"), vec![c.id.clone()]);
    let stranger = register("stranger").await;
    let (s, h, body) = stranger.call(Method::GET, &path, None).await;
    assert_problem(s, &h, &body, 404);
}

#[tokio::test]
async fn search_is_ranked_and_never_crosses_conversations() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let d = register("d").await;
    let word = format!("pineapple{}", unique());
    let ab = a.direct_with(&b).await;
    let cd = c.direct_with(&d).await;
    a.send(&ab, &format!("{word} on pizza")).await;
    a.send(&ab, &format!("{word} {word} {word} everywhere"))
        .await;
    a.send(&ab, "nothing to see").await;
    c.send(&cd, &format!("{word} juice")).await;
    let hits = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["message"]["content"].as_str().map(str::to_owned))
            .collect()
    };
    let found = eventually(WAIT, || async {
        let (s, body) = b.get(&format!("/api/search?q={word}")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        (hits(&body).len() == 2).then_some(body)
    })
    .await;
    assert!(hits(&found)[0].ends_with("everywhere"), "ranked: {found}");
    assert!(
        found["results"][0]["highlight"]
            .as_str()
            .unwrap_or("")
            .contains("<b>"),
        "{found}"
    );
    let found = eventually(WAIT, || async {
        let (_, body) = d.get(&format!("/api/search?q={word}")).await;
        (!hits(&body).is_empty()).then_some(body)
    })
    .await;
    assert_eq!(hits(&found), vec![format!("{word} juice")]);
    let (_, body) = b
        .get(&format!(
            "/api/search?q={word}&conversation_id={ab}&limit=1"
        ))
        .await;
    assert_eq!(hits(&body).len(), 1);
    assert_eq!(body["next_offset"], 1);
    let (s, h, body) = b
        .call(
            Method::GET,
            &format!("/api/search?q={word}&conversation_id={cd}"),
            None,
        )
        .await;
    assert_problem(s, &h, &body, 404);
    for q in [
        "/api/search",
        "/api/search?q=",
        "/api/search?q=a&limit=0",
        "/api/search?q=a&offset=-1",
    ] {
        let (s, h, body) = b.call(Method::GET, q, None).await;
        assert_problem(s, &h, &body, 400);
    }
}

#[tokio::test]
async fn attachments_are_sniffed_hashed_served_with_ranges_and_only_to_participants() {
    let a = register("a").await;
    let b = register("b").await;
    let c = register("c").await;
    let conv = a.direct_with(&b).await;
    let mut bytes = PNG.to_vec();
    bytes.extend((0..5000u32).map(|i| (i % 251) as u8));
    let form = multipart::Form::new()
        .part(
            "file",
            file_part(bytes.clone(), "../../holiday.png", "text/plain"),
        )
        .text("caption", "look");
    let (s, h, msg) =
        upload_form(&a, &format!("/api/conversations/{conv}/attachments"), form).await;
    assert_eq!(s, StatusCode::CREATED, "{msg}");
    assert!(h.get("x-consistency-token").is_some());
    assert_eq!(msg["kind"], "file");
    assert_eq!(msg["content"], "look");
    let att = &msg["attachment"];
    assert_eq!(
        att["content_type"], "image/png",
        "sniffed, not the claimed text/plain"
    );
    assert_eq!(att["filename"], "holiday.png");
    assert_eq!(att["size"], bytes.len());
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(att["sha256"], digest.as_str());
    let path = format!("/api/attachments/{}", att["id"].as_str().expect("id"));

    let res = eventually(WAIT, || async {
        let res = fetch(&b, &path, None).await;
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await;
    let h = res.headers().clone();
    assert_eq!(
        h.get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    assert!(h
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .starts_with("attachment"));
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert_eq!(res.bytes().await.expect("body").as_ref(), bytes.as_slice());

    let res = fetch(&b, &path, Some("bytes=2-5")).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes 2-5/{}", bytes.len()).as_str())
    );
    assert_eq!(res.bytes().await.expect("body").as_ref(), &bytes[2..=5]);
    let res = fetch(&b, &path, Some("bytes=-3")).await;
    assert_eq!(
        res.bytes().await.expect("body").as_ref(),
        &bytes[bytes.len() - 3..]
    );
    let res = fetch(&b, &path, Some("bytes=999999-")).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let res = fetch(&c, &path, None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "not a participant");

    // Deleting the message deletes the file.
    let (s, _, _) = a
        .call(
            Method::DELETE,
            &format!("/api/messages/{}", msg["id"].as_str().unwrap_or("")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        (fetch(&b, &path, None).await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_uploads_get_clear_4xx_answers() {
    let a = register("a").await;
    let b = register("b").await;
    let stranger = register("stranger").await;
    let conv = a.direct_with(&b).await;
    let path = format!("/api/conversations/{conv}/attachments");
    // Over the limit (1 MiB in the test stack): refused while streaming.
    let big = vec![7u8; 1024 * 1024 + 1];
    let (s, h, body) = upload_form(
        &a,
        &path,
        multipart::Form::new().part(
            "file",
            file_part(big, "big.bin", "application/octet-stream"),
        ),
    )
    .await;
    assert_problem(s, &h, &body, 413);
    let (s, h, body) =
        upload_form(&a, &path, multipart::Form::new().text("caption", "no file")).await;
    assert_problem(s, &h, &body, 422);
    let (s, h, body) = upload_form(
        &a,
        &path,
        multipart::Form::new()
            .part("file", file_part(vec![1], "a", "x/y"))
            .text("other", "x"),
    )
    .await;
    assert_problem(s, &h, &body, 422);
    let (s, h, body) = upload_form(
        &stranger,
        &path,
        multipart::Form::new().part("file", file_part(vec![1], "a", "x/y")),
    )
    .await;
    assert_problem(s, &h, &body, 404);
    let (s, h, body) = a
        .call(Method::POST, &path, Some(json!({"file": "not multipart"})))
        .await;
    assert_problem(s, &h, &body, 415);
    let (s, h, body) = a
        .call(
            Method::GET,
            &format!("/api/attachments/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_problem(s, &h, &body, 404);
}

#[tokio::test]
async fn avatars_take_small_images_only() {
    let a = register("a").await;
    let b = register("b").await;
    let (s, _, info) = upload_form(
        &a,
        "/api/users/me/avatar",
        multipart::Form::new().part("file", file_part(PNG.to_vec(), "me.png", "image/png")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(info["content_type"], "image/png");
    let res = eventually(WAIT, || async {
        let res = fetch(&b, &format!("/api/users/{}/avatar", a.id), None).await;
        (res.status() == StatusCode::OK).then_some(res)
    })
    .await;
    assert_eq!(res.bytes().await.expect("body").as_ref(), PNG);
    let (s, h, body) = upload_form(
        &a,
        "/api/users/me/avatar",
        multipart::Form::new().part(
            "file",
            file_part(b"just text".to_vec(), "me.png", "image/png"),
        ),
    )
    .await;
    assert_problem(s, &h, &body, 422);
    let mut big = PNG.to_vec();
    big.resize(65537, 0);
    let (s, h, body) = upload_form(
        &a,
        "/api/users/me/avatar",
        multipart::Form::new().part("file", file_part(big, "big.png", "image/png")),
    )
    .await;
    assert_problem(s, &h, &body, 413);
    let (s, _, _) = a.call(Method::DELETE, "/api/users/me/avatar", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    eventually(WAIT, || async {
        (fetch(&b, &format!("/api/users/{}/avatar", a.id), None)
            .await
            .status()
            == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn sending_too_fast_gets_429_with_retry_after() {
    // The stack's budget (scripts/test.sh raises it so floods elsewhere fit).
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (limit, window) = (env("SEND_RATE_LIMIT", 30), env("SEND_RATE_WINDOW_SECS", 10));
    let a = register("a").await;
    let b = register("b").await;
    let conv = a.direct_with(&b).await;
    let path = format!("/api/conversations/{conv}/messages");
    let mut last = None;
    // Fixed windows: 2 × limit + 1 sends cross at most one boundary, so one window sees
    // limit + 1 of them.
    for i in 0..(2 * limit + 1) {
        let r = a
            .call(
                Method::POST,
                &path,
                Some(json!({"content": format!("m{i}")})),
            )
            .await;
        if r.0 == StatusCode::TOO_MANY_REQUESTS {
            last = Some(r);
            break;
        }
        assert_eq!(r.0, StatusCode::CREATED);
    }
    let (s, h, body) = last.expect("a send past the budget within one window is refused");
    assert_problem(s, &h, &body, 429);
    let retry: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=window).contains(&retry), "{retry}");
    // Another user is not affected.
    let (s, _) = b.post(&path, json!({"content": "still fine"})).await;
    assert_eq!(s, StatusCode::CREATED);
}
