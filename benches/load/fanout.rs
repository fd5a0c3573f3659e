//! The fan-out scenario: K sockets in groups of [`GROUP`] members (one sender, the rest
//! receive), messages sent into the groups at several offered rates on the same sockets.
//!
//! Each round starts only once the sign-up mails of the scenario's users have gone out
//! ([`mail_sent`]) and the sockets' presence traffic has settled (no frame for a second), is
//! timed from the send's start (the sender writes its clock into the message)
//! to the frame's arrival, and is verified by content: every receiving socket must get
//! exactly the messages its conversation gained during the round (the `seq` range between
//! the primary's `last_seq` before and after), each once, in `seq` order.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{
    admin, client, hist, open_loop, open_socket, post, random_loopback, register, sender_of,
    ticket, Env, Lat, Plan, Res, User, GROUP,
};

/// One offered rate's round.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Round {
    pub offered_per_sec: u64,
    pub sent_per_sec: f64,
    /// Sends not created: refused or failed.
    pub send_errors: u64,
    /// Deliveries the stored messages call for: each message once to each other member.
    pub expected_deliveries: u64,
    /// Deliveries that arrived (the expected ones among them).
    pub deliveries: u64,
    /// Expected messages a socket never got.
    pub missing: u64,
    /// Messages a socket got more than once.
    pub duplicated: u64,
    /// Messages that arrived after one with a higher `seq` on the same socket.
    pub out_of_order: u64,
    /// From the send's start to the frame's arrival.
    pub latency: Lat,
    /// From the send's start to its message's `created_at` (the start of the transaction
    /// that appended it: the request, NGINX and the wait for a batch).
    #[serde(default)]
    pub to_stored: Lat,
    /// From the message's `created_at` to the frame's arrival (the append, its commit, the
    /// event bus, the listener, the socket and the load generator's read).
    #[serde(default)]
    pub from_stored: Lat,
    /// From the message's `created_at` to its send's 201 answer read by the load generator
    /// (the append, its commit, the WAL position and the way back through NGINX), one per
    /// message.
    #[serde(default)]
    pub stored_to_answer: Lat,
    /// From the send's answer to the frame's arrival, one per delivery, 0 for a frame that
    /// came first (the event bus, the listener, the hub, the socket, NGINX and the
    /// generator's read, beside the answer's own way back).
    #[serde(default)]
    pub answer_to_socket: Lat,
    /// Deliveries that arrived before their send's answer.
    #[serde(default)]
    pub before_answer: u64,
    /// (upper bound ms, count) buckets of the delivery latency, for the chart.
    pub buckets: Vec<(f64, u64)>,
    /// The disk's syncs while the round's messages were sent.
    #[serde(default)]
    pub disk: super::disk::Window,
    /// The share (0–1) of the cores the host stole while they were sent
    /// ([`super::cpu::Steal`]).
    #[serde(default)]
    pub stolen_share: f64,
    /// CPU seconds per process class while the round's messages were sent (the deliveries'
    /// tail after the last send not included): how much of the machine each rate took.
    #[serde(default)]
    pub cpu: super::cpu::Usage,
}

impl Round {
    /// Every expected message arrived once and in order.
    pub fn exact(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// The scenario's result.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Fanout {
    pub sockets: usize,
    pub groups: usize,
    /// In ascending offered rate; the last is the plan's target rate.
    #[serde(default)]
    pub rounds: Vec<Round>,
    /// Seconds the rounds waited for the outboxes' mail to go out ([`mail_sent`]).
    #[serde(default)]
    pub mail_wait_secs: f64,
    /// Mails still queued when the rounds began anyway (the wait is bounded).
    #[serde(default)]
    pub mail_left: i64,
}

impl Fanout {
    /// The round at the highest offered rate.
    pub fn top(&self) -> Round {
        self.rounds.last().cloned().unwrap_or_default()
    }

    /// The highest offered rate delivered exactly with p99 within `p99_ms`.
    pub fn sustained(&self, p99_ms: f64) -> Option<&Round> {
        self.rounds
            .iter()
            .filter(|r| r.exact() && r.send_errors == 0 && r.latency.p99 <= p99_ms)
            .max_by_key(|r| r.offered_per_sec)
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    sender_id: Option<&'a str>,
    #[serde(borrow)]
    content: Option<&'a str>,
    seq: Option<i64>,
    #[serde(borrow)]
    created_at: Option<&'a str>,
}

/// One open socket: its member's conversation, whether that member receives (every member
/// but the group's sender), and what it got in the current round.
struct Socket {
    conv: String,
    receives: bool,
    got: Arc<Mutex<Got>>,
}

/// What one socket got in the current round.
struct Got {
    seqs: Vec<i64>,
    /// Each delivery's message content, its `created_at` and its arrival (Unix µs).
    arrivals: Vec<(String, i64, i64)>,
    latency: hdrhistogram::Histogram<u64>,
    to_stored: hdrhistogram::Histogram<u64>,
    from_stored: hdrhistogram::Histogram<u64>,
}

impl Got {
    fn clear(&mut self) {
        self.seqs.clear();
        self.arrivals.clear();
        self.latency.reset();
        self.to_stored.reset();
        self.from_stored.reset();
    }
}

/// The clock (Unix microseconds) a fan-out message carries: `"fan-out t=<micros> …"`.
fn sent_at(content: &str) -> Option<i64> {
    content
        .split_whitespace()
        .find_map(|w| w.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}

/// Unix microseconds of an RFC 3339 time.
fn micros_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The text of fan-out message `n`, carrying the clock at the send's start.
fn timed_content(n: u64) -> String {
    format!("fan-out t={} message {n}", now_micros())
}

/// Each conversation's `last_seq` on the primary.
async fn last_seqs(env: &Env, convs: &[String]) -> Res<HashMap<String, i64>> {
    let db = admin(&env.primary_admin).await?;
    let ids: Vec<uuid::Uuid> = convs.iter().filter_map(|c| c.parse().ok()).collect();
    let rows = db
        .query(
            "SELECT id, last_seq FROM messaging.conversations WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, uuid::Uuid>(0).to_string(), r.get::<_, i64>(1)))
        .collect())
}

/// Runs the scenario: the plan's lower rates, then its target rate.
pub async fn run(env: &Env, plan: &Plan) -> Res<Fanout> {
    let groups = plan.fanout_sockets / GROUP;
    eprintln!("fan-out: registering {} users", groups * GROUP);
    let users = register(&env.base, "f", groups * GROUP, 64).await?;
    let c = client()?;
    let mut senders = Vec::new();
    let mut conv_of = HashMap::new();
    let mut sender_ids = std::collections::HashSet::new();
    for g in 0..groups {
        let members = &users[g * GROUP..(g + 1) * GROUP];
        let ids: Vec<&str> = members[1..].iter().map(|u| u.id.as_str()).collect();
        let conv = post(
            &c,
            &env.base,
            &members[0],
            "/api/conversations",
            json!({"participant_ids": ids, "name": format!("fan-out {g}"), "is_group": true}),
        )
        .await?;
        let conv = conv["id"].as_str().unwrap_or_default().to_owned();
        for m in members {
            conv_of.insert(m.id.clone(), conv.clone());
        }
        sender_ids.insert(members[0].id.clone());
        senders.push((members[0].clone(), conv));
    }
    eprintln!("fan-out: opening {} sockets", users.len());
    let frames = Arc::new(AtomicU64::new(0));
    // Readers wait for a frame or the end, with no timer: 10 000 sockets polling a timeout
    // every half second woke the load generator 20 000 times a second, on the cores the
    // stack's deliveries need.
    let stop = tokio_util::sync::CancellationToken::new();
    let base = env.base.clone();
    let opened = futures_util::stream::iter(users.clone())
        .map(|u| {
            let (base, c) = (base.clone(), c.clone());
            async move {
                let t = ticket(&c, &base, &u).await?;
                let ws = open_socket(&base, &t, Some(random_loopback())).await?;
                Ok::<(User, super::Ws), Box<dyn std::error::Error + Send + Sync>>((u, ws))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut sockets: Vec<Socket> = Vec::new();
    let mut readers = Vec::new();
    for s in opened {
        let Ok((user, mut ws)) = s else { continue };
        let got = Arc::new(Mutex::new(Got {
            seqs: Vec::new(),
            arrivals: Vec::new(),
            latency: hist(),
            to_stored: hist(),
            from_stored: hist(),
        }));
        sockets.push(Socket {
            conv: conv_of.get(&user.id).cloned().unwrap_or_default(),
            receives: !sender_ids.contains(&user.id),
            got: got.clone(),
        });
        let (frames, stop) = (frames.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => match m {
                        Some(Ok(m)) => m,
                        _ => break,
                    },
                };
                let now = now_micros();
                frames.fetch_add(1, Ordering::Relaxed);
                let Ok(text) = msg.to_text() else { continue };
                let Ok(f) = serde_json::from_str::<Frame>(text) else {
                    continue;
                };
                let Some(d) = f.data.filter(|_| f.kind == "message.created") else {
                    continue;
                };
                if d.sender_id == Some(user.id.as_str()) {
                    continue;
                }
                if let (Some(seq), Ok(mut got)) = (d.seq, got.lock()) {
                    got.seqs.push(seq);
                    if let Some(t) = d.content.and_then(sent_at) {
                        let _ = got.latency.record((now - t).max(1) as u64);
                        if let Some(stored) = d.created_at.and_then(micros_of) {
                            let _ = got.to_stored.record((stored - t).max(1) as u64);
                            let _ = got.from_stored.record((now - stored).max(1) as u64);
                            if let Some(content) = d.content {
                                got.arrivals.push((content.to_owned(), stored, now));
                            }
                        }
                    }
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    let open = sockets.len();
    let convs: Vec<String> = senders.iter().map(|(_, c)| c.clone()).collect();
    let (mail_wait_secs, mail_left) = mail_sent(env).await?;
    let mut rounds = Vec::new();
    for rate in plan
        .fanout_steps
        .iter()
        .copied()
        .chain(std::iter::once(plan.fanout_rate))
    {
        settle(&frames).await;
        for socket in &sockets {
            if let Ok(mut g) = socket.got.lock() {
                g.clear();
            }
        }
        let before = last_seqs(env, &convs).await?;
        eprintln!(
            "fan-out: {open} sockets; {rate} messages/s for {} s",
            plan.fanout_secs
        );
        let answered: super::Answered = Arc::default();
        let (from, started, cores_before) = (
            super::disk::now(),
            std::time::Instant::now(),
            super::cpu::sample(),
        );
        let send = open_loop(
            "fan-out send",
            &senders,
            rate as f64,
            plan.fanout_secs,
            sender_of(env.base.clone(), timed_content, Some(answered.clone())),
        )
        .await;
        let (sent_until, cpu) = (
            super::disk::now(),
            super::cpu::usage(
                &format!("fan-out at {rate}/s"),
                started.elapsed().as_secs_f64(),
                &cores_before,
                &super::cpu::sample(),
            ),
        );
        let after = last_seqs(env, &convs).await?;
        let expected: i64 = sockets
            .iter()
            .filter(|s| s.receives)
            .filter_map(|s| Some(after.get(&s.conv)? - before.get(&s.conv)?))
            .sum();
        // Let the last deliveries land (at most 10 s).
        for _ in 0..100 {
            let arrived: usize = sockets
                .iter()
                .map(|s| s.got.lock().map_or(0, |g| g.seqs.len()))
                .sum();
            if arrived as i64 >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        rounds.push(Round {
            // Taken after the deliveries' wait: a sync still running as the sends ended
            // (a stall) has been recorded by now.
            disk: super::disk::Window::between(&format!("fan-out at {rate}/s"), from, sent_until),
            stolen_share: cpu.stolen_share,
            cpu,
            ..verify(rate, &send, &sockets, &before, &after, &answered)
        });
        let r = rounds.last().cloned().unwrap_or_default();
        eprintln!(
            "  {} of {} deliveries ({} missing, {} duplicated, {} out of order), p50 {:.1} p99 {:.1} ms (to stored p50 {:.1} p99 {:.1}, from stored p50 {:.1} p99 {:.1}); stored → answer p50 {:.1} p99 {:.1}, answer → socket p50 {:.1} p99 {:.1}, {} before their answer; disk syncs p99 {:.1} ms, stalls {}; host steal {:.0}%",
            r.deliveries, r.expected_deliveries, r.missing, r.duplicated, r.out_of_order,
            r.latency.p50, r.latency.p99, r.to_stored.p50, r.to_stored.p99, r.from_stored.p50,
            r.from_stored.p99, r.stored_to_answer.p50, r.stored_to_answer.p99,
            r.answer_to_socket.p50, r.answer_to_socket.p99, r.before_answer,
            r.disk.p99_ms, r.disk.stall_list(5), r.stolen_share * 100.0
        );
    }
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    Ok(Fanout {
        sockets: open,
        groups,
        rounds,
        mail_wait_secs,
        mail_left,
    })
}

/// Waits until every mail queued in the outboxes (the sign-up mails of the users just
/// registered, one each) has been sent, at most 5 minutes: the rounds measure fan-out, and
/// the mail worker and the local SMTP server draining thousands of mails beside them took
/// up to a third of a core (2026-12-03, 10 000 sign-ups). The SMTP server stands for a
/// provider on another machine. Returns how long it waited (seconds) and how many mails were
/// still queued when it stopped waiting (the report says so when any were).
///
/// Errors: the primary cannot be queried.
async fn mail_sent(env: &Env) -> Res<(f64, i64)> {
    let db = admin(&env.primary_admin).await?;
    let started = std::time::Instant::now();
    let mut waiting: i64 = 0;
    while started.elapsed() < Duration::from_secs(300) {
        waiting = db
            .query_one(
                "SELECT (SELECT count(*) FROM auth.mail_outbox WHERE sent_at IS NULL)
                      + (SELECT count(*) FROM messaging.mail_outbox WHERE sent_at IS NULL)",
                &[],
            )
            .await?
            .get(0);
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let waited = started.elapsed().as_secs_f64();
    eprintln!("fan-out: waited {waited:.0} s for the mail outboxes ({waiting} mails left)");
    Ok((waited, waiting))
}

/// Waits until no frame has arrived for a second (presence of newly opened sockets, the
/// tail of the previous round), at most 60 s.
async fn settle(frames: &AtomicU64) {
    let mut last = frames.load(Ordering::Relaxed);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = frames.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Checks what every socket got against its conversation's `seq` range of the round.
fn verify(
    rate: u64,
    send: &super::Run,
    sockets: &[Socket],
    before: &HashMap<String, i64>,
    after: &HashMap<String, i64>,
    answered: &super::Answered,
) -> Round {
    let mut round = Round {
        offered_per_sec: rate,
        sent_per_sec: send.per_sec,
        send_errors: send.errors + send.refused,
        ..Default::default()
    };
    let (mut latency, mut to_stored, mut from_stored) = (hist(), hist(), hist());
    let (mut stored_to_answer, mut answer_to_socket) = (hist(), hist());
    let answered = answered.lock().map(|a| a.clone()).unwrap_or_default();
    let mut timed = std::collections::HashSet::new();
    // Per message: (stored, answer, last arrival), Unix microseconds, written to
    // `$BENCH_FANOUT_TRACE/fanout-trace-RATE.txt` when that is set (README, "Benchmark").
    let mut timeline: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    for socket in sockets {
        let Ok(got) = socket.got.lock() else { continue };
        for (content, stored, arrived) in &got.arrivals {
            let Some((content, &answer)) = answered.get_key_value(content) else {
                continue;
            };
            if timed.insert(content.clone()) {
                let _ = stored_to_answer.record((answer - stored).max(1) as u64);
            }
            let t = timeline
                .entry(content.as_str())
                .or_insert((*stored, answer, *arrived));
            t.2 = t.2.max(*arrived);
            if *arrived < answer {
                round.before_answer += 1;
            }
            let _ = answer_to_socket.record((arrived - answer).max(1) as u64);
        }
        let _ = latency.add(&got.latency);
        let _ = to_stored.add(&got.to_stored);
        let _ = from_stored.add(&got.from_stored);
        let (Some(&lo), Some(&hi)) = (before.get(&socket.conv), after.get(&socket.conv)) else {
            continue;
        };
        round.deliveries += got.seqs.len() as u64;
        let mut seen = std::collections::HashSet::new();
        let mut highest = i64::MIN;
        for &s in &got.seqs {
            if !seen.insert(s) {
                round.duplicated += 1;
            } else if s < highest {
                round.out_of_order += 1;
            }
            highest = highest.max(s);
        }
        // A sender's own socket skips its own messages: it expects nothing.
        if socket.receives {
            let wanted = (lo + 1..=hi).filter(|s| !seen.contains(s)).count();
            round.missing += wanted as u64;
            round.expected_deliveries += (hi - lo) as u64;
        }
    }
    if let Ok(dir) = std::env::var("BENCH_FANOUT_TRACE") {
        let mut lines: Vec<_> = timeline.values().collect();
        lines.sort();
        let text: String = lines
            .iter()
            .map(|(s, a, l)| format!("{s} {a} {l}\n"))
            .collect();
        let path = format!("{dir}/fanout-trace-{rate}.txt");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("fan-out: {path} not written: {e}");
        }
    }
    round.latency = Lat::of(&latency);
    round.to_stored = Lat::of(&to_stored);
    round.from_stored = Lat::of(&from_stored);
    round.stored_to_answer = Lat::of(&stored_to_answer);
    round.answer_to_socket = Lat::of(&answer_to_socket);
    let top = latency.value_at_quantile(0.999).max(1000);
    let step = (top / 40).max(100);
    let mut lo = 0;
    while lo < top {
        let hi = lo + step;
        round.buckets.push((
            hi as f64 / 1000.0,
            latency.count_between(lo, hi.saturating_sub(1)),
        ));
        lo = hi;
    }
    round
}
