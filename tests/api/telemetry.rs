//! Observability: traces exported over real OTLP (HTTP/protobuf, decoded here with the
//! message definitions of opentelemetry-proto's trace.proto), metrics scraped from each
//! service's internal `/metrics`, and logs that hold no secret.
//! Its own test binary: it owns the OTLP receiver port the test stack exports to.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The subset of `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` and
/// `opentelemetry.proto.trace.v1` this test reads (field numbers as in the .proto files).
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<Link>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Link {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }

    pub const SPAN_KIND_SERVER: i32 = 2;
    pub const SPAN_KIND_CLIENT: i32 = 3;

    impl Span {
        pub fn attr(&self, key: &str) -> Option<String> {
            self.attributes.iter().find(|a| a.key == key).and_then(|a| {
                match a.value.as_ref()?.value.as_ref()? {
                    Value::String(s) => Some(s.clone()),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Int(i) => Some(i.to_string()),
                    Value::Double(d) => Some(d.to_string()),
                }
            })
        }
    }
}

type Spans = Arc<Mutex<Vec<(String, otlp::Span)>>>;

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body, answered 200.
async fn receiver() -> Spans {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:18318")
        .await
        .expect("OTLP receiver port (OTEL_EXPORTER_OTLP_ENDPOINT of the test stack)");
    let sink = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            first = false;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(req) =
                        <otlp::ExportTraceServiceRequest as prost::Message>::decode(body.as_slice())
                    {
                        let mut all = sink.lock().expect("spans");
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|a| a.key == "service.name")
                                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                                    otlp::Value::String(s) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    all.push((service.clone(), s));
                                }
                            }
                        }
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    spans
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_request_is_one_trace_with_db_spans_and_a_linked_fan_out_and_logs_hold_no_secret() {
    let spans = receiver().await;
    let a = register("otel").await;
    let b = register("otelpeer").await;
    let conv = a.direct_with(&b).await;
    let mut b_ws = b.socket().await;

    let trace = format!("{:032x}", rand::random::<u128>());
    let parent = format!("{:016x}", rand::random::<u64>() | 1);
    let traceparent = format!("00-{trace}-{parent}-01");
    let (s, _, sent) = a
        .call_with(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "traced"})),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    next_event(&mut b_ws, "message.created", Duration::from_secs(10)).await;

    // The server span continues the given trace; the send's wait for group commit is its
    // child; the batch that appended it (its own trace, holding the DB spans, which name the
    // pool) links to that wait, and the fan-out span (its own trace) to the request.
    let (server, dbs, fanout) = eventually(Duration::from_secs(15), || async {
        let all = spans.lock().expect("spans").clone();
        let server = all
            .iter()
            .map(|(_, s)| s)
            .find(|s| hex(&s.trace_id) == trace && s.kind == otlp::SPAN_KIND_SERVER)?
            .clone();
        let queued = all
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "messaging.send_queue" && s.parent_span_id == server.span_id)?
            .clone();
        let batch = all
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.name == "messaging.group_commit"
                    && s.links.iter().any(|l| l.span_id == queued.span_id)
            })?
            .clone();
        let dbs: Vec<otlp::Span> = all
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.parent_span_id == batch.span_id && s.kind == otlp::SPAN_KIND_CLIENT)
            .cloned()
            .collect();
        let fanout = all
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.name == "realtime.fan_out" && s.links.iter().any(|l| hex(&l.trace_id) == trace)
            })?
            .clone();
        (!dbs.is_empty()).then_some((server, dbs, fanout))
    })
    .await;
    assert_eq!(
        hex(&server.parent_span_id),
        parent,
        "continues the caller's span"
    );
    assert_eq!(server.name, "POST /api/conversations/{id}/messages");
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(server.attr("user.id").as_deref(), Some(a.id.as_str()));
    for db in &dbs {
        assert_eq!(
            db.attr("db.system").as_deref(),
            Some("postgresql"),
            "{db:?}"
        );
        assert_eq!(
            db.attr("db.pool").as_deref(),
            Some("primary"),
            "writes use the primary"
        );
        assert!(
            db.attr("db.statement")
                .is_some_and(|s| !s.contains("traced")),
            "no values in spans"
        );
    }
    let statements: Vec<String> = dbs.iter().filter_map(|d| d.attr("db.statement")).collect();
    assert!(
        statements.iter().any(|s| s.contains("FOR UPDATE"))
            && statements.iter().any(|s| s.starts_with("WITH input AS")),
        "the batch's lock and append statements are its spans: {statements:?}"
    );
    assert!(fanout.links.iter().any(|l| l.span_id == server.span_id));
    let services: Vec<String> = spans
        .lock()
        .expect("spans")
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        services.iter().any(|s| s == "switchboard-messaging"),
        "{services:?}"
    );

    // A replica read names the replica pool.
    let (s, _) = a.get(&format!("/api/conversations/{conv}/messages")).await;
    assert_eq!(s, StatusCode::OK);

    logs_hold_no_secret(&a).await;
    metrics_after_traffic().await;
}

async fn logs_hold_no_secret(user: &User) {
    // Every secret of a full scenario: password, refresh token (and its successor), access
    // token, WebSocket ticket.
    let (s, headers, body) = refresh(&user.refresh_cookie, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rotated = set_cookie(&headers, REFRESH_COOKIE).expect("cookie").0;
    let (_, ticket) = user.post("/api/ws-ticket", json!({})).await;
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let url = format!("{}/ws?ticket={ticket}", base().replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    drop(ws);
    let secrets = [
        user.password.clone(),
        user.refresh_cookie
            .trim_start_matches(REFRESH_COOKIE)
            .trim_start_matches('=')
            .to_owned(),
        rotated
            .trim_start_matches(REFRESH_COOKIE)
            .trim_start_matches('=')
            .to_owned(),
        user.access.clone(),
        body["access_token"].as_str().unwrap_or("").to_owned(),
        ticket,
    ];
    tokio::time::sleep(Duration::from_millis(500)).await; // let log writes land
    let dir = format!(
        "{}/logs",
        std::env::var("SWITCHBOARD_DATA").expect("set by scripts/test.sh")
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("logs") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        files += 1;
        for secret in &secrets {
            assert!(secret.len() >= 8);
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a secret",
                path.display()
            );
        }
    }
    assert!(files >= 4, "auth, messaging and nginx logs were read");
}

fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(family))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

async fn metrics_after_traffic() {
    let port = |v: &str, d: u16| {
        std::env::var(v)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(d)
    };
    let auth = http()
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            port("AUTH_METRICS_PORT", 19181)
        ))
        .send()
        .await
        .expect("auth metrics")
        .text()
        .await
        .expect("text");
    assert!(
        sample(
            &auth,
            "http_request_duration_seconds_count",
            &["route=\"/auth/register\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{auth}"
    );
    assert!(sample(
        &auth,
        "db_pool_connections",
        &["pool=\"primary\"", "state=\"size\""]
    )
    .is_some_and(|n| n >= 1.0));
    let mut all = String::new();
    for n in 0..instances().len() as u16 {
        let text = http()
            .get(format!(
                "http://127.0.0.1:{}/metrics",
                port("MESSAGING_METRICS_PORT", 19182) + n
            ))
            .send()
            .await
            .expect("messaging metrics")
            .text()
            .await
            .expect("text");
        all.push_str(&text);
    }
    for (family, labels) in [
        (
            "http_request_duration_seconds_count",
            vec![
                "route=\"/api/conversations/{id}/messages\"",
                "status=\"201\"",
            ],
        ),
        ("db_query_duration_seconds_count", vec!["pool=\"primary\""]),
        ("db_read_routing_total", vec!["reason=\"default\""]),
        (
            "db_pool_connections",
            vec!["pool=\"replica-1\"", "state=\"size\""],
        ),
        ("replica_healthy", vec!["replica=\"replica-2\""]),
        ("fanout_delay_seconds_count", vec![]),
    ] {
        let v = sample(&all, family, &labels);
        assert!(v.is_some_and(|v| v >= 1.0), "{family}{labels:?} = {v:?}");
    }
    for family in [
        "replica_lag_bytes",
        "replica_lag_seconds",
        "websocket_connections",
        "notify_queue_usage",
    ] {
        let v = sample(&all, family, &[]);
        assert!(v.is_some_and(|v| v >= 0.0), "{family} = {v:?}");
    }
    let p99 = sample(&all, "fanout_delay_seconds_sum", &[]).unwrap_or(f64::MAX);
    assert!(p99 < 60.0, "fan-out delays are seconds, not garbage: {p99}");
}
