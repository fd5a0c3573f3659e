//! Overload: sends offered at twice the sustainable rate (the closed-loop maximum of the
//! send scenario) for a while, then at half of it. Every send carries a `client_id`, so
//! what was accepted can be counted in the database afterwards: a send answered 201 and not
//! stored is lost. The stack must refuse the excess quickly (503/429 with `Retry-After`),
//! keep the latency of what it accepts, and be back to normal latencies soon after.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde_json::json;

use super::{admin, client, disk, hist, Env, Lat, Pairs, Plan, Res, User};

/// What the overload scenario measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Overload {
    pub sustainable_per_sec: f64,
    pub offered_per_sec: f64,
    pub secs: u64,
    pub attempted: u64,
    /// 201.
    pub accepted: u64,
    /// 503 or 429 with `Retry-After`.
    pub refused: u64,
    /// 503 or 429 without `Retry-After`, any other status, or no answer.
    pub failed: u64,
    /// Answered 201 but not in the database.
    pub lost: u64,
    pub accepted_latency: Lat,
    pub refused_latency: Lat,
    /// The accepted sends' p99 (ms) for each second of the overload, by scheduled start:
    /// where in the run the tail was.
    #[serde(default)]
    pub accepted_p99_by_second: Vec<f64>,
    /// The half-load phase after the overload.
    pub after_per_sec: f64,
    pub after_secs: u64,
    pub after_latency: Lat,
    /// Sends of the half-load phase not accepted: refused cleanly or failed.
    pub after_failed: u64,
    /// Of those, the clean refusals (503/429 with `Retry-After`).
    #[serde(default)]
    pub after_refused: u64,
    /// The half-load phase's accepted p99 (ms) for each second, by scheduled start.
    #[serde(default)]
    pub after_p99_by_second: Vec<f64>,
    /// The half-load phase's sends not accepted, for each second by scheduled start.
    #[serde(default)]
    pub after_not_accepted_by_second: Vec<u64>,
    /// The disk's syncs during the overload and during the half-load phase after it.
    #[serde(default)]
    pub disk_during: super::disk::Window,
    #[serde(default)]
    pub disk_after: super::disk::Window,
    /// From the end of the overload to the last send of the half-load phase that was not
    /// accepted or took over [`NORMAL_P99_MS`] (0: none did).
    pub recovery_secs: f64,
}

impl Overload {
    /// When the half-load phase was back to normal: the first second from which every
    /// second was normal — every send accepted and the accepted p99 within
    /// [`NORMAL_P99_MS`], or over it only while the disk stalled (such a second is not a
    /// queue the overload left; those seconds are returned too, for the report to list) —
    /// as seconds from the phase's start; `None` when its last second was not normal (or
    /// the run has no per-second figures). A standing queue shows as the seconds before it.
    pub fn normal_from(&self) -> (Option<f64>, Vec<u64>) {
        let (p99, refused) = (
            &self.after_p99_by_second,
            &self.after_not_accepted_by_second,
        );
        let normal = |s: usize| {
            refused.get(s).is_some_and(|n| *n == 0)
                && (p99[s] <= NORMAL_P99_MS || self.disk_after.stalled_in(s as u64).is_some())
        };
        let from = (0..p99.len()).find(|&s| (s..p99.len()).all(normal));
        let excused = (0..p99.len())
            .filter(|&s| p99[s] > NORMAL_P99_MS && normal(s))
            .map(|s| s as u64)
            .collect();
        (from.map(|s| s as f64), excused)
    }
}

/// The accepted sends' p99 (ms) a second of the half-load phase must keep to be normal:
/// the overload target (the report's `OVERLOAD_P99_MS` is this).
pub const NORMAL_P99_MS: f64 = 100.0;

/// How the stack answered one request.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    /// Served (2xx: 201 for a new send, 200 for a page or for a send whose `client_id`
    /// was stored already, as a resend after an uncertain refusal may find), its body read.
    Accepted,
    /// 503 or 429 with `Retry-After`: turned away cleanly — by admission control (503), or
    /// by the per-user send budget (429), which scripts/bench.sh lifts out of the way.
    Refused,
    /// Anything else: another status, a refusal without `Retry-After`, or no answer.
    Failed,
}

/// A request's [`Answer`] and, for a refusal, the wait it asked for.
#[derive(Clone, Copy)]
pub(crate) struct Reply {
    pub answer: Answer,
    /// `Retry-After` in whole seconds (RFC 9110 §10.2.3); zero unless refused.
    pub retry_after: Duration,
}

impl Reply {
    /// Classifies `res`, reading its body.
    pub(crate) async fn of(res: reqwest::Result<reqwest::Response>) -> Self {
        let Ok(r) = res else {
            return Self::failed();
        };
        let status = r.status();
        let retry_after = retry_after_secs(&r);
        let body_ok = r.bytes().await.is_ok();
        match (status.as_u16(), retry_after) {
            _ if status.is_success() && body_ok => Self {
                answer: Answer::Accepted,
                retry_after: Duration::ZERO,
            },
            (503 | 429, Some(secs)) => Self {
                answer: Answer::Refused,
                retry_after: Duration::from_secs(secs),
            },
            _ => Self::failed(),
        }
    }

    fn failed() -> Self {
        Self {
            answer: Answer::Failed,
            retry_after: Duration::ZERO,
        }
    }
}

/// A response's `Retry-After` in whole seconds (RFC 9110 §10.2.3; the HTTP-date form,
/// which the services never send, reads as none).
pub(crate) fn retry_after_secs(res: &reqwest::Response) -> Option<u64> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// Sends `content` to `conv` as `user` with `client_id`, and classifies the answer.
pub(crate) async fn send_once(
    c: &reqwest::Client,
    base: &str,
    user: &User,
    conv: &str,
    client_id: &str,
    content: &str,
) -> Reply {
    let res = c
        .post(format!("{base}/api/conversations/{conv}/messages"))
        .bearer_auth(&user.token)
        .json(&json!({"content": content, "client_id": client_id}))
        .send()
        .await;
    Reply::of(res).await
}

/// One send: its answer, latency (µs, from its scheduled start) and scheduled offset.
type Outcome = (Answer, u64, Duration);

/// What [`offer`] returns: each send's outcome, the `client_id`s accepted, and the phase's
/// bounds on the disk probe's clock ([`disk::now`]).
type Offered = (Vec<Outcome>, Vec<String>, (f64, f64));

/// Offers `rate` sends a second for `secs` (open loop; latency from each send's scheduled
/// start).
async fn offer(env: &Env, pairs: &Pairs, rate: f64, secs: u64, tag: &str) -> Res<Offered> {
    let c = client()?;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let (start, from) = (tokio::time::Instant::now(), disk::now());
    let n = (rate * secs as f64) as u64;
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + offset).await;
        let (user, conv) = pairs[i as usize % pairs.len()].clone();
        let (c, base) = (c.clone(), env.base.clone());
        let (outcomes, accepted) = (outcomes.clone(), accepted.clone());
        let client_id = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            let at = start + offset;
            let content = format!("overload {client_id}");
            let answer = send_once(&c, &base, &user, &conv, &client_id, &content)
                .await
                .answer;
            let micros = at.elapsed().as_micros() as u64;
            if answer == Answer::Accepted {
                if let Ok(mut a) = accepted.lock() {
                    a.push(client_id);
                }
            }
            if let Ok(mut o) = outcomes.lock() {
                o.push((answer, micros, offset));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    Ok((outcomes, accepted, (from, disk::now())))
}

fn latency_of(outcomes: &[Outcome], which: Answer) -> Lat {
    let mut h: Histogram<u64> = hist();
    for (a, micros, _) in outcomes {
        if *a == which {
            let _ = h.record((*micros).max(1));
        }
    }
    Lat::of(&h)
}

/// The p99 (ms) of the sends answered `which`, for each second of `secs` by scheduled start.
fn p99_by_second(outcomes: &[Outcome], which: Answer, secs: u64) -> Vec<f64> {
    (0..secs)
        .map(|s| {
            let second: Vec<Outcome> = outcomes
                .iter()
                .filter(|(_, _, offset)| offset.as_secs() == s)
                .copied()
                .collect();
            latency_of(&second, which).p99
        })
        .collect()
}

/// Runs the scenario: `sustainable` sends a second is what the closed loop achieved.
pub async fn run(env: &Env, plan: &Plan, pairs: &Pairs, sustainable: f64) -> Res<Overload> {
    let rate = (2.0 * sustainable).max(2.0);
    let tag = format!("ovl{:x}", rand::random::<u32>());
    eprintln!(
        "overload: {rate:.0} sends/s (2 × {sustainable:.0}) for {} s",
        plan.overload_secs
    );
    let (during, accepted, (from, to)) = offer(env, pairs, rate, plan.overload_secs, &tag).await?;
    let half = (sustainable / 2.0).max(1.0);
    eprintln!("  then {half:.0}/s for {} s", plan.recovery_secs);
    let (after, _, (after_from, after_to)) =
        offer(env, pairs, half, plan.recovery_secs, &format!("{tag}r")).await?;
    // Both windows once both phases are over: a sync still running when the overload
    // ended (a stall across the boundary) has been recorded by now.
    let disk_during = disk::Window::between("overload: 2 × the sustainable rate", from, to);
    let disk_after = disk::Window::between("overload: half load after it", after_from, after_to);

    let stored: i64 = admin(&env.primary_admin)
        .await?
        .query_one(
            "SELECT count(*) FROM messaging.messages WHERE client_id = ANY($1)",
            &[&accepted],
        )
        .await?
        .get(0);
    let count = |o: &[Outcome], a: Answer| o.iter().filter(|(x, _, _)| *x == a).count() as u64;
    let last_slow = after
        .iter()
        .filter(|(a, micros, _)| *a != Answer::Accepted || *micros as f64 > NORMAL_P99_MS * 1e3)
        .map(|(_, _, offset)| offset.as_secs_f64())
        .fold(0.0, f64::max);
    let after_p99_by_second = p99_by_second(&after, Answer::Accepted, plan.recovery_secs);
    let after_not_accepted_by_second: Vec<u64> = (0..plan.recovery_secs)
        .map(|s| {
            after
                .iter()
                .filter(|(a, _, offset)| *a != Answer::Accepted && offset.as_secs() == s)
                .count() as u64
        })
        .collect();
    let r = Overload {
        sustainable_per_sec: sustainable,
        offered_per_sec: rate,
        secs: plan.overload_secs,
        attempted: during.len() as u64,
        accepted: count(&during, Answer::Accepted),
        refused: count(&during, Answer::Refused),
        failed: count(&during, Answer::Failed),
        lost: (accepted.len() as u64).saturating_sub(stored.max(0) as u64),
        accepted_latency: latency_of(&during, Answer::Accepted),
        refused_latency: latency_of(&during, Answer::Refused),
        accepted_p99_by_second: p99_by_second(&during, Answer::Accepted, plan.overload_secs),
        after_per_sec: half,
        after_secs: plan.recovery_secs,
        after_latency: latency_of(&after, Answer::Accepted),
        after_failed: after.len() as u64 - count(&after, Answer::Accepted),
        after_refused: count(&after, Answer::Refused),
        after_p99_by_second,
        after_not_accepted_by_second,
        recovery_secs: last_slow,
        disk_during,
        disk_after,
    };
    let (normal_from, excused) = r.normal_from();
    let normal_from = normal_from.map_or("never".into(), |s| format!("second {s}"));
    eprintln!(
        "  {} accepted (p99 {:.1} ms), {} refused (p99 {:.1} ms), {} failed, {} lost; half load normal from {normal_from} on (disk-stall seconds counted normal: {excused:?}), last slow send at {:.1} s",
        r.accepted, r.accepted_latency.p99, r.refused, r.refused_latency.p99, r.failed, r.lost, r.recovery_secs
    );
    let by_second: Vec<String> = r
        .accepted_p99_by_second
        .iter()
        .map(|p| format!("{p:.0}"))
        .collect();
    eprintln!("  accepted p99 by second (ms): {}", by_second.join(" "));
    let after_by_second: Vec<String> = r
        .after_p99_by_second
        .iter()
        .zip(&r.after_not_accepted_by_second)
        .map(|(p, n)| format!("{p:.0}/{n}"))
        .collect();
    eprintln!(
        "  after: {} not accepted ({} refused); p99 ms / not accepted by second: {}",
        r.after_failed,
        r.after_refused,
        after_by_second.join(" ")
    );
    eprintln!(
        "  disk syncs: during p99 {:.1} ms, stalls {}; after p99 {:.1} ms, stalls {}",
        r.disk_during.p99_ms,
        r.disk_during.stall_list(5),
        r.disk_after.p99_ms,
        r.disk_after.stall_list(5)
    );
    Ok(r)
}
