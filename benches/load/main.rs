//! Switchboard's load generator: drives a running stack through NGINX with real users,
//! tokens and sockets, measures the raw PostgreSQL limits with `pgbench` in the same run, and
//! writes a report (Markdown, JSON, PNG charts). `scripts/bench.sh [short|full]` starts a
//! stack of its own and runs this; see README "Benchmark".
//!
//! Scenarios, each reported as a ratio to its limit where one exists:
//! 1. send: N users post to their own conversations as fast as answers come back (closed
//!    loop), then at fixed offered loads of 25/50/75 % of that maximum (open loop, latency
//!    measured from each request's scheduled start, so a stall is not hidden);
//! 2. history: the same N users read newest-50 pages (served by the replica);
//! 3. fan-out: K sockets in groups of `GROUP` members, messages into the groups at several
//!    offered rates; latency from the send's start to its arrival at each receiving socket,
//!    every delivery checked by content ([`fanout`]);
//! 4. sockets: idle authenticated sockets opened straight on one messaging instance, and the
//!    growth of that process's RSS per socket;
//! 5. overload: twice the sustainable send rate, then half of it: accepted, refused, lost,
//!    and the time back to normal latencies ([`overload`]);
//! 6. soak (its own mode, `scripts/bench.sh soak`): ten minutes at 60 % of the sustainable
//!    send rate, latency and each process class's memory sampled every minute ([`soak`]).
//!
//! Sends carry a `client_id` and read the answer; history reads carry the consistency token
//! of the reader's last send, as a browser's do. Each scenario also reports where the cores
//! went: CPU seconds per process class ([`cpu`]).
//!
//! Raw limits: `pgbench` in the same run, like for like (see [`raw`]).

mod batches;
mod cpu;
mod disk;
mod fanout;
mod overload;
mod raw;
mod report;
mod soak;
mod statements;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use overload::{send_once, Answer, Reply};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Run sizes. `short` fits CI (well under two minutes of load); `full` is the published run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub mode: String,
    /// Concurrent users for send and history, and pgbench clients.
    pub clients: usize,
    pub send_secs: u64,
    pub step_secs: u64,
    pub history_secs: u64,
    pub fanout_sockets: usize,
    /// The target rate, run last; `fanout_steps` are run before it on the same sockets.
    pub fanout_rate: u64,
    #[serde(default)]
    pub fanout_steps: Vec<u64>,
    pub fanout_secs: u64,
    pub idle_sockets: usize,
    /// Seconds of each raw-limit run; `raw_runs` runs before and as many after a scenario.
    pub raw_secs: u64,
    #[serde(default)]
    pub raw_runs: usize,
    #[serde(default)]
    pub overload_secs: u64,
    #[serde(default)]
    pub recovery_secs: u64,
    /// Seconds of the soak (soak mode only; 0: none).
    #[serde(default)]
    pub soak_secs: u64,
}

/// Members per fan-out group (one sender, the rest receive).
pub const GROUP: usize = 10;

impl Plan {
    /// For profiling the fan-out path: `BENCH_FANOUT_SOCKETS` and `BENCH_FANOUT_RATES`
    /// (comma-separated messages/s, the last one the target) replace the mode's.
    fn fanout_overrides(&mut self) -> Res<()> {
        if let Ok(n) = std::env::var("BENCH_FANOUT_SOCKETS") {
            self.fanout_sockets = n
                .trim()
                .parse()
                .ok()
                .filter(|&n| n >= GROUP)
                .ok_or_else(|| format!("BENCH_FANOUT_SOCKETS={n}: a number, at least {GROUP}"))?;
        }
        if let Ok(list) = std::env::var("BENCH_FANOUT_RATES") {
            let mut rates = list
                .split(',')
                .map(|r| r.trim().parse::<u64>().ok().filter(|&r| r > 0))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| format!("BENCH_FANOUT_RATES={list}: messages/s, comma-separated"))?;
            if let Some(top) = rates.pop() {
                self.fanout_rate = top;
                self.fanout_steps = rates;
            }
        }
        Ok(())
    }

    fn new(mode: &str) -> Self {
        match mode {
            "full" => Self {
                mode: mode.into(),
                clients: 32,
                send_secs: 30,
                step_secs: 15,
                history_secs: 30,
                fanout_sockets: 10_000,
                fanout_rate: 1_000,
                fanout_steps: vec![50, 100, 250, 375, 500, 750],
                fanout_secs: 30,
                idle_sockets: 18_000,
                raw_secs: 10,
                raw_runs: 3,
                overload_secs: 30,
                recovery_secs: 20,
                soak_secs: 0,
            },
            // Only the soak: the sustainable rate (closed loop, as in full mode), then ten
            // minutes at 60 % of it.
            "soak" => Self {
                mode: mode.into(),
                send_secs: 30,
                soak_secs: 600,
                ..Self::new("short")
            },
            _ => Self {
                mode: "short".into(),
                clients: 32,
                send_secs: 8,
                step_secs: 4,
                history_secs: 8,
                fanout_sockets: 1_000,
                fanout_rate: 200,
                fanout_steps: vec![100],
                fanout_secs: 8,
                idle_sockets: 2_000,
                raw_secs: 3,
                raw_runs: 1,
                overload_secs: 8,
                recovery_secs: 8,
                soak_secs: 0,
            },
        }
    }
}

struct Env {
    base: String,
    direct: String,
    messaging_pid: u32,
    primary_admin: String,
    replica_admin: String,
    out: std::path::PathBuf,
}

impl Env {
    /// The stack scripts/bench.sh started, from its variables.
    fn from_vars() -> Res<Self> {
        Ok(Self {
            base: env("SWITCHBOARD_URL")?,
            direct: env("BENCH_MESSAGING_DIRECT")?,
            messaging_pid: env("BENCH_MESSAGING_PID")?.trim().parse()?,
            primary_admin: env("SWITCHBOARD_PRIMARY_ADMIN_URL")?,
            replica_admin: env("SWITCHBOARD_REPLICA_ADMIN_URL")?,
            out: env("BENCH_OUT")?.into(),
        })
    }
}

fn env(name: &str) -> Res<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (scripts/bench.sh sets it)").into())
}

/// A loopback source address of its own (127.x.y.z): NGINX limits sign-ups per address.
fn random_loopback() -> IpAddr {
    let n: u32 = rand::random::<u32>() & 0x00ff_ffff;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n.max(2)))
}

#[derive(Clone)]
struct User {
    id: String,
    token: String,
    /// The consistency token of this user's last send, sent on reads (`X-Consistency-Token`).
    ryw: Option<String>,
}

fn client() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Registers `n` users, `parallel` at a time, each from its own loopback address.
async fn register(base: &str, prefix: &str, n: usize, parallel: usize) -> Res<Vec<User>> {
    let run = rand::random::<u32>();
    let users = futures_util::stream::iter(0..n)
        .map(|i| {
            let base = base.to_owned();
            let prefix = prefix.to_owned();
            async move {
                let c = reqwest::Client::builder()
                    .local_address(random_loopback())
                    .build()?;
                let name = format!("{prefix}{run:x}_{i}");
                // A refusal with `Retry-After` (503 overloaded, 429) is retried after it, as
                // a client would, a few times: on a host whose neighbours take a third of
                // the cores, sign-ups 64 at a time beside the mail worker outwait auth's pool.
                let mut tries = 0;
                let (status, body) = loop {
                    let res = c
                        .post(format!("{base}/auth/register"))
                        .json(&json!({"username": name, "email": format!("{name}@bench.test"), "password": "bench password"}))
                        .send()
                        .await?;
                    let status = res.status();
                    let after = overload::retry_after_secs(&res);
                    let body: Value = res.json().await?;
                    match after {
                        Some(secs) if tries < 5 && matches!(status.as_u16(), 429 | 503) => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_secs(secs.clamp(1, 30))).await;
                        }
                        _ => break (status, body),
                    }
                };
                if status.as_u16() != 201 {
                    return Err(format!("register: {status} {body}").into());
                }
                Ok::<User, Box<dyn std::error::Error + Send + Sync>>(User {
                    id: body["user"]["id"].as_str().unwrap_or_default().to_owned(),
                    token: body["access_token"].as_str().unwrap_or_default().to_owned(),
                    ryw: None,
                })
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await;
    users.into_iter().collect()
}

async fn post(c: &reqwest::Client, base: &str, user: &User, path: &str, body: Value) -> Res<Value> {
    let res = c
        .post(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    if !status.is_success() {
        return Err(format!("POST {path}: {status} {body}").into());
    }
    Ok(body)
}

fn hist() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Latency figures of one measurement, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Lat {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Lat {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One throughput measurement: requests per second, latency, and failures.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub label: String,
    pub offered_per_sec: Option<f64>,
    pub per_sec: f64,
    /// Requests that failed: neither served nor refused cleanly, or (a closed loop's)
    /// refused at every attempt. Before `refused` was recorded, refusals counted here.
    pub errors: u64,
    /// Attempts refused cleanly: 503 or 429 with `Retry-After` (admission control); a closed
    /// loop's are made again after the wait.
    #[serde(default)]
    pub refused: u64,
    pub latency: Lat,
}

/// Attempts a closed loop's user makes at one request before giving it up as failed: the
/// web client's `SEND_ATTEMPTS` (web/assets/chat.js).
const ATTEMPTS: u32 = 6;

/// Closed loop: each user repeats `op` back to back for `secs`. A refused request is made
/// again (the same `n`, so a send keeps its `client_id`) once its `Retry-After` has passed,
/// as the web client does (web/assets/chat.js), not at once, up to [`ATTEMPTS`] in all; a
/// served request's latency counts from its first attempt, the waits included.
async fn closed_loop<F, Fut>(label: &str, users: &[(User, String)], secs: u64, op: F) -> Run
where
    F: Fn(reqwest::Client, User, String, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Reply> + Send,
{
    let Ok(c) = client() else {
        return Run::default();
    };
    let total = Arc::new(Mutex::new(hist()));
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (user, conv) in users {
        let (c, op, total, counts) = (c.clone(), op.clone(), total.clone(), counts.clone());
        let (user, conv) = (user.clone(), conv.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let (mut n, mut attempts) = (1, 0);
            let mut first = Instant::now();
            while Instant::now() < end {
                if attempts == 0 {
                    first = Instant::now();
                }
                attempts += 1;
                let reply = op(c.clone(), user.clone(), conv.clone(), n).await;
                counts.count(reply.answer);
                match reply.answer {
                    Answer::Accepted => {
                        let _ = h.record(first.elapsed().as_micros() as u64);
                    }
                    Answer::Refused if attempts < ATTEMPTS => {
                        let until = (Instant::now() + reply.retry_after).min(end);
                        tokio::time::sleep_until(until.into()).await;
                        continue;
                    }
                    Answer::Refused => counts.count(Answer::Failed),
                    Answer::Failed => {}
                }
                (n, attempts) = (n + 1, 0);
            }
            if let Ok(mut all) = total.lock() {
                let _ = all.add(&h);
            }
        }));
    }
    finish(label, None, start, tasks, &total, &counts).await
}

/// Open loop: `rate` requests a second for `secs`, spread over the users; latency from the
/// scheduled start (no coordinated omission).
async fn open_loop<F, Fut>(
    label: &str,
    users: &[(User, String)],
    rate: f64,
    secs: u64,
    op: F,
) -> Run
where
    F: Fn(reqwest::Client, User, String, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Reply> + Send,
{
    let Ok(c) = client() else {
        return Run::default();
    };
    let total = Arc::new(Mutex::new(hist()));
    let counts = Arc::new(Counts::default());
    let start = tokio::time::Instant::now();
    let n = (rate * secs as f64) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let (user, conv) = users[i as usize % users.len()].clone();
        let (c, op, total, counts) = (c.clone(), op.clone(), total.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let answer = op(c, user, conv, i).await.answer;
            if answer == Answer::Accepted {
                if let Ok(mut h) = total.lock() {
                    let _ = h.record(at.elapsed().as_micros() as u64);
                }
            } else {
                counts.count(answer);
            }
        }));
    }
    finish(label, Some(rate), start.into_std(), tasks, &total, &counts).await
}

/// A loop's requests that were not served, by how they ended.
#[derive(Default)]
struct Counts {
    failed: AtomicU64,
    refused: AtomicU64,
}

impl Counts {
    /// Counts a request that was not served (a served one is counted by its latency).
    fn count(&self, answer: Answer) {
        match answer {
            Answer::Accepted => {}
            Answer::Refused => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Failed => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits for a run's tasks and sums it up: successes per second since `start`, failures,
/// refusals, and the latency of the successes.
async fn finish(
    label: &str,
    offered_per_sec: Option<f64>,
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    total: &Mutex<Histogram<u64>>,
    counts: &Counts,
) -> Run {
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = total.lock().map(|h| h.clone()).unwrap_or_else(|_| hist());
    Run {
        label: label.into(),
        offered_per_sec,
        per_sec: h.len() as f64 / elapsed,
        errors: counts.failed.load(Ordering::Relaxed),
        refused: counts.refused.load(Ordering::Relaxed),
        latency: Lat::of(&h),
    }
}

/// Sends message `n` with an ordinary text.
fn sender(
    base: String,
) -> impl Fn(reqwest::Client, User, String, u64) -> futures_util::future::BoxFuture<'static, Reply> + Clone
{
    sender_of(
        base,
        |n| format!("bench message {n} with some ordinary words in it"),
        None,
    )
}

/// When sends' 201 answers were read (Unix microseconds), by the message's content.
pub(crate) type Answered = Arc<Mutex<std::collections::HashMap<String, i64>>>;

/// Sends message `n` with the text `content(n)` (made when the request starts) and a
/// `client_id` (the same for the same `n`); when it was served (201, or 200 for a resend
/// whose `client_id` was stored already) and its answer read, when that was is noted in
/// `answered` if given.
fn sender_of(
    base: String,
    content: fn(u64) -> String,
    answered: Option<Answered>,
) -> impl Fn(reqwest::Client, User, String, u64) -> futures_util::future::BoxFuture<'static, Reply> + Clone
{
    let run = rand::random::<u32>();
    move |c, user, conv, n| {
        let (base, answered) = (base.clone(), answered.clone());
        Box::pin(async move {
            let content = content(n);
            let client_id = format!("b{run:x}-{}-{n}", user.id);
            let reply = send_once(&c, &base, &user, &conv, &client_id, &content).await;
            if reply.answer == Answer::Accepted {
                if let Some(Ok(mut at)) = answered.as_ref().map(|a| a.lock()) {
                    at.insert(content, chrono::Utc::now().timestamp_micros());
                }
            }
            reply
        })
    }
}

fn reader(
    base: String,
) -> impl Fn(reqwest::Client, User, String, u64) -> futures_util::future::BoxFuture<'static, Reply> + Clone
{
    move |c, user, conv, _| {
        let base = base.clone();
        Box::pin(async move {
            let mut req = c
                .get(format!("{base}/api/conversations/{conv}/messages?limit=50"))
                .bearer_auth(&user.token);
            if let Some(t) = &user.ryw {
                req = req.header("x-consistency-token", t);
            }
            Reply::of(req.send().await).await
        })
    }
}

async fn admin(url: &str) -> Res<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

// ---- sockets ---------------------------------------------------------------------------

async fn ticket(c: &reqwest::Client, base: &str, user: &User) -> Res<String> {
    let body = post(c, base, user, "/api/ws-ticket", json!({})).await?;
    Ok(body["ticket"].as_str().unwrap_or_default().to_owned())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a socket to `http_base` (NGINX or one instance) from `local`, waits for `hello`.
async fn open_socket(http_base: &str, ticket: &str, local: Option<IpAddr>) -> Res<Ws> {
    let addr: SocketAddr = http_base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("{http_base}: {e}"))?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    let url = format!("ws://{addr}/ws?ticket={ticket}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(Some(Ok(m))) if m.to_text().is_ok_and(|t| t.contains("\"hello\"")) => Ok(ws),
        other => Err(format!("no hello: {other:?}").into()),
    }
}

/// Fan-out result: deliveries and their latency.
/// Idle sockets result.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Idle {
    pub target: usize,
    pub opened: usize,
    pub failed: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_socket: f64,
    pub open_files_limit: u64,
    pub first_error: Option<String>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_files_limit(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn idle(env: &Env, plan: &Plan) -> Res<Idle> {
    let per_user = 100;
    let users = register(&env.base, "i", plan.idle_sockets.div_ceil(per_user), 32).await?;
    let c = client()?;
    let limit = open_files_limit(env.messaging_pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(env.messaging_pid);
    eprintln!(
        "sockets: opening {} idle sockets on one instance ({} KiB RSS before)",
        plan.idle_sockets, before
    );
    let first_error = Arc::new(Mutex::new(None::<String>));
    let direct = env.direct.clone();
    let opened = futures_util::stream::iter(0..plan.idle_sockets)
        .map(|i| {
            let user = users[i / per_user].clone();
            let (c, base, direct, first_error) = (
                c.clone(),
                env.base.clone(),
                direct.clone(),
                first_error.clone(),
            );
            async move {
                // Spread source addresses: one loopback address has ~28k ephemeral ports.
                let local = IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (i / 20_000) as u8, 1));
                let r = async {
                    let t = ticket(&c, &base, &user).await?;
                    open_socket(&direct, &t, Some(local)).await
                }
                .await;
                if let Err(e) = &r {
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                }
                r.ok()
            }
        })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await;
    let sockets: Vec<Ws> = opened.into_iter().flatten().collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(env.messaging_pid);
    let n = sockets.len();
    eprintln!("sockets: {n} open, {after} KiB RSS");
    drop(sockets);
    Ok(Idle {
        target: plan.idle_sockets,
        opened: n,
        failed: plan.idle_sockets - n,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_socket: if n > 0 {
            after.saturating_sub(before) as f64 / n as f64
        } else {
            0.0
        },
        open_files_limit: limit,
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
    })
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub plan: Option<Plan>,
    pub machine: Value,
    pub send_max: Run,
    pub send_steps: Vec<Run>,
    pub raw_insert: raw::Raw,
    pub history: Run,
    pub raw_select: raw::Raw,
    /// The group commit alone (the database part of a send), one entry per batch size.
    #[serde(default)]
    pub group_commit: Vec<(usize, raw::Raw)>,
    pub fanout: fanout::Fanout,
    pub idle: Idle,
    #[serde(default)]
    pub overload: overload::Overload,
    /// CPU seconds per process class in each scenario.
    #[serde(default)]
    pub cpu: Vec<cpu::Usage>,
    /// The disk's own sync latency in each scenario.
    #[serde(default)]
    pub disk: Vec<disk::Window>,
    /// Sends and group commits in each scenario.
    #[serde(default)]
    pub batches: Vec<batches::Window>,
    /// The primary's longest-running statements in each scenario.
    #[serde(default)]
    pub statements: Vec<statements::Window>,
}

/// Where a scenario's resources are recorded: CPU per process class, the disk's syncs, the
/// group commits' batches, and the primary's statements.
struct Gauges<'a> {
    cpu: &'a mut Vec<cpu::Usage>,
    disk: &'a mut Vec<disk::Window>,
    batches: &'a mut Vec<batches::Window>,
    statements: &'a mut Vec<statements::Window>,
}

impl Results {
    fn gauges(&mut self) -> Gauges<'_> {
        Gauges {
            cpu: &mut self.cpu,
            disk: &mut self.disk,
            batches: &mut self.batches,
            statements: &mut self.statements,
        }
    }
}

/// Runs `f` and records, as `scenario`, the CPU each process class spent meanwhile, the
/// disk's sync latency, the sends and batches the instances appended, and the primary's
/// longest-running statements.
async fn measured<T, F: std::future::Future<Output = T>>(r: Gauges<'_>, scenario: &str, f: F) -> T {
    let counting = statements::reset().await;
    let appended = batches::sample().await;
    let (before, started, from) = (cpu::sample(), Instant::now(), disk::now());
    let out = f.await;
    let (finished, ended, to) = (cpu::sample(), started.elapsed(), disk::now());
    r.batches.push(batches::Window::between(
        scenario,
        &appended,
        &batches::sample().await,
    ));
    let usage = cpu::usage(scenario, ended.as_secs_f64(), &before, &finished);
    eprintln!(
        "  ({scenario}: the host stole {:.0}% of the cores)",
        usage.stolen_share * 100.0
    );
    r.cpu.push(usage);
    r.disk.push(disk::Window::between(scenario, from, to));
    if counting {
        r.statements.extend(statements::read(scenario).await);
    }
    out
}

async fn machine(env: &Env) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let pg = match admin(&env.primary_admin).await {
        Ok(c) => c
            .query_one("SHOW server_version", &[])
            .await
            .ok()
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    // This process's nice value (/proc/self/stat field 19, proc(5)): bench.sh raises the load
    // generator's priority where it may, and the report says so.
    let nice = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            after.split_whitespace().nth(16)?.parse::<i64>().ok()
        })
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "generator_nice": nice,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_gib": (mem as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "postgresql": pg,
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "stack": format!(
            "everything on this machine: PostgreSQL primary + 1 streaming replica, auth, 2 messaging instances (database pools of {} on the primary, {} on the replica), NGINX, and the load generator",
            pool_size("DB_POOL_SIZE", "16"),
            pool_size("DB_REPLICA_POOL_SIZE", &pool_size("DB_POOL_SIZE", "16")),
        ),
    })
}

/// A pool size the stack was started with (`var`, as scripts/bench.sh exported it to the
/// services), else the services' default `default`.
fn pool_size(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Whether scenario `name` runs: all by default, or those listed in `BENCH_ONLY`
/// (comma-separated: send, history, fanout, sockets), for profiling one path.
fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

type Pairs = Vec<(User, String)>;

/// Users with a direct conversation each (with a partner who never sends).
async fn pairs(env: &Env, plan: &Plan) -> Res<Pairs> {
    eprintln!("setup: {} senders with a conversation each", plan.clients);
    let senders = register(&env.base, "s", plan.clients, 16).await?;
    let partners = register(&env.base, "p", plan.clients, 16).await?;
    let c = client()?;
    let mut pairs = Vec::new();
    for (s, p) in senders.iter().zip(&partners) {
        let conv = post(
            &c,
            &env.base,
            s,
            "/api/conversations",
            json!({"participant_ids": [p.id]}),
        )
        .await?;
        pairs.push((
            s.clone(),
            conv["id"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok(pairs)
}

/// Scenario 1 and its limit: sends at the maximum and at fixed loads, then pgbench inserts.
async fn send(env: &Env, plan: &Plan, pairs: &Pairs, r: &mut Results) -> Res<()> {
    raw_side(
        env,
        plan,
        pairs,
        raw::Limit::Insert,
        &mut r.raw_insert,
        "before",
    )?;
    eprintln!(
        "send: closed loop, {} users, {} s",
        plan.clients, plan.send_secs
    );
    r.send_max = measured(
        r.gauges(),
        "send, closed loop",
        closed_loop(
            "send, closed loop",
            pairs,
            plan.send_secs,
            sender(env.base.clone()),
        ),
    )
    .await;
    eprintln!(
        "  {:.0} messages/s, p99 {:.1} ms",
        r.send_max.per_sec, r.send_max.latency.p99
    );
    for pct in [25.0, 50.0, 75.0] {
        let rate = (r.send_max.per_sec * pct / 100.0).max(1.0);
        let label = format!("send at {pct:.0}%");
        let run = measured(
            r.gauges(),
            &label,
            open_loop(
                &label,
                pairs,
                rate,
                plan.step_secs,
                sender(env.base.clone()),
            ),
        )
        .await;
        eprintln!(
            "  at {rate:.0}/s: p50 {:.1} p99 {:.1} ms",
            run.latency.p50, run.latency.p99
        );
        r.send_steps.push(run);
    }
    raw_side(
        env,
        plan,
        pairs,
        raw::Limit::Insert,
        &mut r.raw_insert,
        "after",
    )?;
    for batch in GROUP_COMMIT_BATCHES {
        eprintln!("group commit alone: batches of {batch}, {WRITERS} writers");
        let alone = raw::group_commit_limit(
            &env.primary_admin,
            pairs.len(),
            WRITERS,
            batch,
            1,
            plan.raw_secs,
        )?;
        eprintln!("  {:.0} sends/s", alone.tps);
        r.group_commit.push((batch, alone));
    }
    Ok(())
}

/// Batch sizes the group commit is measured alone at.
const GROUP_COMMIT_BATCHES: [usize; 3] = [1, 8, 32];
/// Writers in the stack: one per messaging instance (`SEND_WRITERS`, 2 instances).
const WRITERS: usize = 2;

/// One side (`when`: before or after its scenario) of a raw limit, merged into `into`.
fn raw_side(
    env: &Env,
    plan: &Plan,
    pairs: &Pairs,
    limit: raw::Limit,
    into: &mut raw::Raw,
    when: &str,
) -> Res<()> {
    let url = match limit {
        raw::Limit::Insert => &env.primary_admin,
        raw::Limit::Select => &env.replica_admin,
    };
    eprintln!(
        "raw {limit:?} ({when}): pgbench, {} clients, {} × {} s",
        plan.clients, plan.raw_runs, plan.raw_secs
    );
    let raw = limit.measure(url, pairs.len(), plan.clients, plan.raw_runs, plan.raw_secs)?;
    eprintln!(
        "  {:.0} {} (host steal by run: {})",
        raw.tps,
        limit.unit(),
        report::percents(&raw.stolen_shares)
    );
    into.merge(raw);
    Ok(())
}

/// Scenario 2 and its limit: newest-50 pages through the stack, then pgbench on the replica.
async fn history(env: &Env, plan: &Plan, pairs: &Pairs, r: &mut Results) -> Res<()> {
    if !wanted("send") {
        // Pages to read: fill the conversations first.
        closed_loop("fill", pairs, 3, sender(env.base.clone())).await;
    }
    eprintln!(
        "history: newest-50 pages, {} users, {} s",
        plan.clients, plan.history_secs
    );
    raw_side(
        env,
        plan,
        pairs,
        raw::Limit::Select,
        &mut r.raw_select,
        "before",
    )?;
    // Each reader carries the consistency token of its own last send, as a browser does.
    let c = client()?;
    let mut readers = Vec::with_capacity(pairs.len());
    for (user, conv) in pairs {
        let res = c
            .post(format!("{}/api/conversations/{conv}/messages", env.base))
            .bearer_auth(&user.token)
            .json(&json!({"content": "before reading"}))
            .send()
            .await?;
        let ryw = res
            .headers()
            .get("x-consistency-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut user = user.clone();
        user.ryw = ryw;
        readers.push((user, conv.clone()));
    }
    r.history = measured(
        r.gauges(),
        "history, pages of 50",
        closed_loop(
            "history, pages of 50",
            &readers,
            plan.history_secs,
            reader(env.base.clone()),
        ),
    )
    .await;
    eprintln!(
        "  {:.0} pages/s, p99 {:.1} ms",
        r.history.per_sec, r.history.latency.p99
    );

    raw_side(
        env,
        plan,
        pairs,
        raw::Limit::Select,
        &mut r.raw_select,
        "after",
    )?;
    Ok(())
}

/// Soak mode: the sustainable send rate (closed loop for `send_secs`), then the soak.
async fn soak_only(env: &Env, plan: &Plan) -> Res<(soak::Soak, Value)> {
    let machine = machine(env).await;
    let pairs = pairs(env, plan).await?;
    eprintln!(
        "soak: sustainable rate, closed loop for {} s",
        plan.send_secs
    );
    let max = closed_loop(
        "send, closed loop",
        &pairs,
        plan.send_secs,
        sender(env.base.clone()),
    )
    .await;
    let soak = soak::run(
        env,
        &pairs,
        max.per_sec,
        plan.soak_secs,
        Duration::from_secs(60),
    )
    .await?;
    Ok((soak, machine))
}

/// Has the benchmark's primary log what can hold a send up, so that a slow second in the
/// report can be lined up with its cause afterwards (`.data/bench/pg/primary.log`): every
/// autovacuum and autoanalyze, with its duration and the pages it truncated
/// (`log_autovacuum_min_duration = 0`), and every statement over 40 ms
/// (`log_min_duration_statement`; PostgreSQL docs §20.8 "Error Reporting and Logging").
/// Set with `ALTER SYSTEM`, one statement each (it cannot run in a transaction block): the
/// benchmark's cluster is made afresh for each run. A failure is printed, not fatal.
async fn log_database_maintenance(env: &Env) {
    let c = match admin(&env.primary_admin).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the primary's logging is left as it was: {e}");
            return;
        }
    };
    for sql in [
        "ALTER SYSTEM SET log_autovacuum_min_duration = 0",
        "ALTER SYSTEM SET log_min_duration_statement = 40",
        "SELECT pg_reload_conf()",
    ] {
        if let Err(e) = c.batch_execute(sql).await {
            eprintln!("{sql}: {e}");
        }
    }
}

async fn run(env: Env, plan: Plan) -> Res<Results> {
    // The disk probe shares PostgreSQL's file system: scripts/bench.sh keeps the clusters in
    // SWITCHBOARD_DATA.
    if let Ok(dir) = std::env::var("SWITCHBOARD_DATA") {
        if let Err(e) = disk::start(std::path::Path::new(&dir)) {
            eprintln!("disk probe not started in {dir}: {e}");
        }
    }
    log_database_maintenance(&env).await;
    let mut r = Results {
        plan: Some(plan.clone()),
        machine: machine(&env).await,
        ..Default::default()
    };
    if wanted("send") || wanted("history") {
        let pairs = pairs(&env, &plan).await?;
        raw::prepare(&env.primary_admin, &env.replica_admin, &pairs).await?;
        if wanted("send") {
            send(&env, &plan, &pairs, &mut r).await?;
        }
        if wanted("history") {
            history(&env, &plan, &pairs, &mut r).await?;
        }
        if wanted("overload") && wanted("send") {
            let sustainable = r.send_max.per_sec;
            r.overload = measured(
                r.gauges(),
                "overload",
                overload::run(&env, &plan, &pairs, sustainable),
            )
            .await?;
        }
    }
    raw::clean(&env.primary_admin).await?;
    if wanted("fanout") {
        r.fanout = measured(r.gauges(), "fan-out", fanout::run(&env, &plan)).await?;
    }
    if wanted("sockets") {
        r.idle = idle(&env, &plan).await?;
    }
    Ok(r)
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and then there is nothing to do (the load needs the stack scripts/bench.sh starts).
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: a benchmark, run by scripts/bench.sh; nothing to do under cargo test");
        return Ok(());
    }
    // BENCH_REPORT_FROM=results.json: write the report of an earlier run again (its text
    // or charts changed), without running anything.
    if let Ok(from) = std::env::var("BENCH_REPORT_FROM") {
        let results: Results = serde_json::from_str(&std::fs::read_to_string(&from)?)?;
        let out = std::path::Path::new(&from)
            .parent()
            .unwrap_or(std::path::Path::new("."));
        report::write(out, &results)?;
        println!("{}", report::markdown(&results));
        return Ok(());
    }
    let mode = std::env::var("BENCH_MODE").unwrap_or_else(|_| "short".into());
    let mut plan = Plan::new(&mode);
    plan.fanout_overrides()?;
    let env = Env::from_vars()?;
    if plan.soak_secs > 0 {
        let out = env.out.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let (soak, machine) = rt.block_on(soak_only(&env, &plan))?;
        std::fs::create_dir_all(&out)?;
        let md = soak::markdown(&soak, &machine);
        std::fs::write(out.join("soak.md"), &md)?;
        std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&soak)?)?;
        println!("{md}");
        eprintln!("report: {}", out.join("soak.md").display());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = env.out.clone();
    let results = rt.block_on(run(env, plan))?;
    std::fs::create_dir_all(&out)?;
    report::write(&out, &results)?;
    println!("{}", report::markdown(&results));
    eprintln!("report: {}", out.display());
    Ok(())
}
