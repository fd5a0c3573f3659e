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
/// Spans that came as OTLP/JSON (NGINX's edge spans, shipped by scripts/edge_spans.py), each
/// with its resource's `service.name` as `service`.
type JsonSpans = Arc<Mutex<Vec<serde_json::Value>>>;

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf or a JSON body (OTLP/HTTP
/// allows both), answered 200.
async fn receiver() -> (Spans, JsonSpans) {
    let spans: Spans = Arc::default();
    let json_spans: JsonSpans = Arc::default();
    let json_sink = json_spans.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:18318")
        .await
        .expect("OTLP receiver port (OTEL_EXPORTER_OTLP_ENDPOINT of the test stack)");
    let sink = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            let json_sink = json_sink.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut json = false;
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
                            if k.eq_ignore_ascii_case("content-type") {
                                json = v.trim().starts_with("application/json");
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if json {
                        let doc: serde_json::Value =
                            serde_json::from_slice(&body).expect("an OTLP/JSON body");
                        json_sink.lock().expect("spans").extend(flatten_json(&doc));
                    } else if let Ok(req) =
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
    (spans, json_spans)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spans of an OTLP/JSON `ExportTraceServiceRequest`, each with `service`.
fn flatten_json(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut spans = Vec::new();
    for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| a["value"]["stringValue"].clone())
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                let mut span = span.clone();
                span["service"] = service.clone();
                spans.push(span);
            }
        }
    }
    spans
}

/// NGINX's edge spans received so far: nginx/edge_trace.js writes them in the OpenTelemetry
/// file exporter's format and scripts/edge_spans.py ships them to this receiver.
fn edge_spans(received: &JsonSpans) -> Vec<serde_json::Value> {
    received.lock().expect("spans").clone()
}

fn edge_attr(span: &serde_json::Value, key: &str) -> Option<String> {
    let value = &span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"];
    value["stringValue"]
        .as_str()
        .or(value["intValue"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_request_is_one_trace_with_db_spans_and_a_linked_fan_out_and_logs_hold_no_secret() {
    let (spans, edges) = receiver().await;
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
            &[
                ("traceparent", &traceparent),
                // A client cannot name the host on the service's span.
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "host=evil.example"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    next_event(&mut b_ws, "message.created", Duration::from_secs(10)).await;

    // NGINX's edge span continues the given trace (the test client is a trusted one); the
    // service's server span is its child. The send's wait for group commit is its
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
                s.name == "process switchboard_events"
                    && s.links.iter().any(|l| hex(&l.trace_id) == trace)
            })?
            .clone();
        (!dbs.is_empty()).then_some((server, dbs, fanout))
    })
    .await;
    let edge = eventually(Duration::from_secs(20), || async {
        edge_spans(&edges)
            .into_iter()
            .find(|e| e["traceId"] == trace.as_str() && e["name"] == "POST /api/")
    })
    .await;
    assert_eq!(edge["service"], "switchboard-nginx");
    assert_eq!(edge["kind"], 2, "a server span");
    assert_eq!(
        edge["parentSpanId"], parent,
        "the edge continues the caller's span"
    );
    assert_eq!(
        hex(&server.parent_span_id),
        edge["spanId"].as_str().expect("span id"),
        "the service span's parent is the edge's"
    );
    assert_eq!(
        edge_attr(&edge, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        edge_attr(&edge, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        edge_attr(&edge, "url.path"),
        Some(format!("/api/conversations/{conv}/messages"))
    );
    assert_eq!(
        edge_attr(&edge, "switchboard.nginx.location").as_deref(),
        Some("/api/")
    );
    let request_id = edge_attr(&edge, "switchboard.request_id").expect("request id");
    assert_eq!(request_id.len(), 32);
    assert_eq!(
        server.attr("switchboard.request_id"),
        Some(request_id),
        "one request id at the edge and in the service"
    );
    assert_eq!(server.name, "POST /api/conversations/{id}/messages");
    // Stable HTTP server semantic conventions.
    assert_eq!(server.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        server.attr("http.route").as_deref(),
        Some("/api/conversations/{id}/messages")
    );
    assert_eq!(
        server.attr("url.path"),
        Some(format!("/api/conversations/{conv}/messages"))
    );
    assert_eq!(server.attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(server.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert!(server.attr("client.address").is_some_and(|a| !a.is_empty()));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(server.attr("user.id").as_deref(), Some(a.id.as_str()));
    for db in &dbs {
        // Stable database client semantic conventions; the routing facts in our namespace.
        assert_eq!(
            db.attr("db.system.name").as_deref(),
            Some("postgresql"),
            "{db:?}"
        );
        let namespace = db.attr("db.namespace").expect("db.namespace");
        assert!(!namespace.is_empty());
        let operation = db.attr("db.operation.name").expect("db.operation.name");
        assert_eq!(db.name, format!("{operation} {namespace}"));
        assert!(db.attr("server.address").is_some_and(|a| !a.is_empty()));
        assert!(db.attr("server.port").is_some_and(|p| p != "0"));
        assert_eq!(
            db.attr("switchboard.db.pool").as_deref(),
            Some("primary"),
            "writes use the primary"
        );
        for old in ["db.system", "db.statement", "db.operation", "db.pool"] {
            assert!(db.attr(old).is_none(), "{old} is not a current name");
        }
        assert!(
            db.attr("db.query.text")
                .is_some_and(|s| !s.contains("traced")),
            "no values in spans"
        );
    }
    let statements: Vec<String> = dbs.iter().filter_map(|d| d.attr("db.query.text")).collect();
    assert!(
        statements
            .iter()
            .any(|s| s.contains("FOR NO KEY UPDATE OF c"))
            && statements.iter().any(|s| s.starts_with("WITH input AS")),
        "the batch's lock and append statements are its spans: {statements:?}"
    );
    assert!(fanout.links.iter().any(|l| l.span_id == server.span_id));
    assert_eq!(fanout.kind, 5, "a consumer span");
    assert_eq!(
        fanout.attr("messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        fanout.attr("messaging.destination.name").as_deref(),
        Some("switchboard_events")
    );
    assert!(fanout
        .attr("switchboard.fanout.recipients")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 1));
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

    // A socket session is a span (child of its upgrade request), each client frame a span in
    // it, and the frame's queries (here a resume's) are the frame's children.
    send_frame(
        &mut b_ws,
        json!({"type": "resume", "cursors": {conv.to_string(): 0}}),
    )
    .await;
    next_event(&mut b_ws, "resumed", Duration::from_secs(10)).await;
    drop(b_ws);
    eventually(Duration::from_secs(15), || async {
        let all = spans.lock().expect("spans").clone();
        let by_id = |id: &[u8]| all.iter().map(|(_, s)| s).find(|s| s.span_id == id);
        let frame = all.iter().map(|(_, s)| s).find(|s| {
            s.name == "WebSocket resume"
                && s.attr("user.id").is_none()
                && s.attr("switchboard.frame.type").as_deref() == Some("resume")
        })?;
        let session = by_id(&frame.parent_span_id)?;
        assert_eq!(session.name, "WebSocket session");
        assert_eq!(session.attr("user.id").as_deref(), Some(b.id.as_str()));
        let upgrade = by_id(&session.parent_span_id)?;
        assert_eq!(upgrade.name, "GET /ws");
        all.iter()
            .any(|(_, s)| s.parent_span_id == frame.span_id && s.kind == otlp::SPAN_KIND_CLIENT)
            .then_some(())
    })
    .await;

    // Work a request leaves running after its answer (a reset link's mail) stays in the
    // request's trace, with its queries.
    let s = http()
        .post(format!("{}/auth/password/forgot", base()))
        .json(&json!({"email": format!("{}@example.com", a.username)}))
        .send()
        .await
        .expect("forgot")
        .status();
    assert_eq!(s, StatusCode::ACCEPTED);
    eventually(Duration::from_secs(10), || async {
        let all = spans.lock().expect("spans").clone();
        let mail = all.iter().map(|(_, s)| s).find(|s| {
            s.name == "auth.account_mail"
                && all.iter().any(|(_, p)| {
                    p.span_id == s.parent_span_id && p.name == "POST /auth/password/forgot"
                })
        })?;
        all.iter()
            .any(|(_, s)| s.parent_span_id == mail.span_id && s.kind == otlp::SPAN_KIND_CLIENT)
            .then_some(())
    })
    .await;

    // A made-up method is `_OTHER` on the span and in the metrics: no series per method.
    let s = http()
        .request(
            Method::from_bytes(b"FROB").expect("method"),
            format!("{}/api/conversations", base()),
        )
        .bearer_auth(&a.access)
        .send()
        .await
        .expect("request")
        .status();
    assert!(s.is_client_error(), "{s}");

    // No database span is a trace of its own: background loops (presence, sweeps, outbox
    // polls, backlog samples) run outside any span and are timed, not traced.
    let orphans: Vec<String> = spans
        .lock()
        .expect("spans")
        .iter()
        .filter(|(_, s)| s.kind == otlp::SPAN_KIND_CLIENT && s.parent_span_id.is_empty())
        .map(|(_, s)| s.name.clone())
        .collect();
    assert!(orphans.is_empty(), "orphan database spans: {orphans:?}");

    // A replica read names the replica pool.
    let (s, _) = a.get(&format!("/api/conversations/{conv}/messages")).await;
    assert_eq!(s, StatusCode::OK);

    // A client the edge does not trust (198.51.100.7, named by the trusted proxy at
    // 127.0.0.1, is not in NGINX_TRACE_CLIENTS) cannot join a trace of its choosing: the edge
    // starts a new one and links what it sent.
    let forged = format!("{:032x}", rand::random::<u128>());
    let forged_parent = format!("{:016x}", rand::random::<u64>() | 1);
    let s = http_from(std::net::Ipv4Addr::LOCALHOST.into())
        .get(format!("{}/api/conversations", base()))
        .bearer_auth(&a.access)
        .header("traceparent", format!("00-{forged}-{forged_parent}-01"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(s, StatusCode::OK);
    let restarted = eventually(Duration::from_secs(20), || async {
        edge_spans(&edges).into_iter().find(|e| {
            e["links"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["traceId"] == forged.as_str()))
        })
    })
    .await;
    assert_ne!(restarted["traceId"], forged.as_str());
    assert!(restarted.get("parentSpanId").is_none(), "a new trace");
    assert_eq!(
        restarted["links"][0]["spanId"], forged_parent,
        "the client's context is kept as a link"
    );
    let new_trace = restarted["traceId"].as_str().expect("trace id").to_owned();
    eventually(Duration::from_secs(15), || async {
        let all = spans.lock().expect("spans").clone();
        assert!(
            all.iter().all(|(_, s)| hex(&s.trace_id) != forged),
            "no service span joins the forged trace"
        );
        all.iter()
            .any(|(_, s)| {
                hex(&s.trace_id) == new_trace
                    && s.kind == otlp::SPAN_KIND_SERVER
                    && hex(&s.parent_span_id) == restarted["spanId"].as_str().unwrap_or("")
            })
            .then_some(())
    })
    .await;

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
    // Let log writes land: NGINX flushes its buffered logs (access, edge spans) every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
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

/// The sum of `family`'s samples whose line holds every one of `labels` (OpenMetrics text;
/// an exemplar after ` # ` is not the value).
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .map(|l| l.split(" # ").next().unwrap_or(l))
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
            "http_server_request_duration_seconds_count",
            &["http_route=\"/auth/register\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{auth}"
    );
    assert!(sample(
        &auth,
        "db_client_connection_max",
        &["db_client_connection_pool_name=\"primary\""]
    )
    .is_some_and(|n| n >= 1.0));
    for (family, least) in [
        ("switchboard_build_info{", 1.0),
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1.0),
        ("process_open_fds", 1.0),
    ] {
        assert!(
            sample(&auth, family, &[]).is_some_and(|v| v >= least),
            "{family} in {auth}"
        );
    }
    assert!(
        auth.contains("service=\"auth\""),
        "build_info names the service"
    );
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
            "http_server_request_duration_seconds_count",
            vec![
                "http_request_method=\"POST\"",
                "http_route=\"/api/conversations/{id}/messages\"",
                "http_response_status_code=\"201\"",
            ],
        ),
        (
            "db_client_operation_duration_seconds_count",
            vec![
                "db_system_name=\"postgresql\"",
                "switchboard_db_pool=\"primary\"",
            ],
        ),
        (
            "switchboard_db_read_routing_total",
            vec!["reason=\"default\""],
        ),
        (
            "db_client_connection_max",
            vec!["db_client_connection_pool_name=\"replica-1\""],
        ),
        ("switchboard_replica_healthy", vec!["replica=\"replica-2\""]),
        ("switchboard_fanout_delay_seconds_count", vec![]),
        ("switchboard_build_info", vec!["service=\"messaging\""]),
    ] {
        let v = sample(&all, family, &labels);
        assert!(v.is_some_and(|v| v >= 1.0), "{family}{labels:?} = {v:?}");
    }
    // Each pool as configured, on every instance (`sample` adds the instances up): the
    // primary's `DB_POOL_SIZE` (unset: 16), each replica's `DB_REPLICA_POOL_SIZE`
    // (scripts/test.sh sets 12; unset: the primary's).
    let size_of = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let primary_pool = size_of("DB_POOL_SIZE").unwrap_or(16.0);
    let replica_pool = size_of("DB_REPLICA_POOL_SIZE").unwrap_or(primary_pool);
    let instances = instances().len() as f64;
    for (pool, size) in [
        ("primary", primary_pool),
        ("replica-1", replica_pool),
        ("replica-2", replica_pool),
    ] {
        let label = format!("db_client_connection_pool_name=\"{pool}\"");
        let v = sample(&all, "db_client_connection_max", &[label.as_str()]);
        assert_eq!(v, Some(size * instances), "{pool}'s pool size in {all}");
    }
    for family in [
        "switchboard_replica_lag_bytes",
        "switchboard_replica_lag_seconds",
        "switchboard_websocket_connections",
        "switchboard_notify_queue_usage_ratio",
        "db_client_connection_count",
        "db_client_connection_pending_requests",
    ] {
        let v = sample(&all, family, &[]);
        assert!(v.is_some_and(|v| v >= 0.0), "{family} = {v:?}");
    }
    assert!(
        all.contains("http_request_method=\"_OTHER\""),
        "made-up methods are _OTHER"
    );
    assert!(!all.contains("FROB"), "no series for a made-up method");

    // The latency histograms carry exemplars naming sampled traces.
    for family in [
        "http_server_request_duration_seconds_bucket",
        "db_client_operation_duration_seconds_bucket",
    ] {
        let exemplars: Vec<&str> = all
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.split_once(" # {trace_id=\"")?.1.get(..32))
            .collect();
        assert!(!exemplars.is_empty(), "{family} has no exemplar");
        assert!(
            exemplars
                .iter()
                .all(|t| t.bytes().all(|b| b.is_ascii_hexdigit()) && *t != "0".repeat(32)),
            "{exemplars:?}"
        );
    }

    // Every metric the alert rules and dashboards query is one the services serve (a renamed
    // metric would leave an alert that can never fire).
    let served = format!("{auth}{all}");
    for file in ["ops/prometheus/alerts.yaml", "ops/grafana/switchboard.json"] {
        let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .expect("monitoring file");
        let mut names: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                ["switchboard_", "http_server_", "db_client_", "process_"]
                    .iter()
                    .any(|p| w.starts_with(p))
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 8, "{file}: {names:?}");
        for name in names {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            let metric = served
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(base));
            let label = served.contains(&format!("{name}=\""));
            assert!(
                metric || label,
                "{file} queries {name}, which no service serves (as a metric or a label)"
            );
        }
    }
    let p99 = sample(&all, "switchboard_fanout_delay_seconds_sum", &[]).unwrap_or(f64::MAX);
    assert!(p99 < 60.0, "fan-out delays are seconds, not garbage: {p99}");
}
