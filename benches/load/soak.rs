//! Soak (`scripts/bench.sh soak`): a long run at a steady share of the sustainable send rate
//! (measured first, closed loop), open loop, with a sample every window: the latency of the
//! sends scheduled in that window, those refused (503/429 with `Retry-After`: admission
//! control, which at this load should refuse nothing) and those that failed otherwise, and
//! the resident memory of each process
//! class — so a leak or a latency that creeps up with time shows as drift between the first
//! and the last windows.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hdrhistogram::Histogram;

use super::{
    cpu, hist,
    overload::{send_once, Answer},
    Env, Lat, Pairs, Res,
};

/// Share of the sustainable send rate a soak runs at.
pub const LOAD: f64 = 0.6;

/// One window of a soak.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Seconds since the soak started, at the window's end.
    pub at_secs: u64,
    /// Accepted sends (201).
    pub sends: Lat,
    /// Refused with `Retry-After` (503/429).
    #[serde(default)]
    pub refused: u64,
    /// Any other answer, or none.
    #[serde(default)]
    pub failed: u64,
    /// Resident memory per process class at the window's end, KiB.
    pub rss_kib: Vec<(String, u64)>,
}

/// A soak's result.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Soak {
    /// The closed-loop maximum measured before, messages/s.
    pub sustainable: f64,
    /// The offered rate, messages/s.
    pub offered: f64,
    pub window_secs: u64,
    pub windows: Vec<Window>,
}

impl Soak {
    /// `(class, first KiB, last KiB)` for every class present in both the first and the last
    /// window.
    pub fn memory_drift(&self) -> Vec<(String, u64, u64)> {
        let (Some(first), Some(last)) = (self.windows.first(), self.windows.last()) else {
            return Vec::new();
        };
        first
            .rss_kib
            .iter()
            .filter_map(|(class, a)| {
                let b = last.rss_kib.iter().find(|(c, _)| c == class)?.1;
                Some((class.clone(), *a, b))
            })
            .collect()
    }
}

/// Runs `secs` of sends at [`LOAD`] × `sustainable` over `pairs`, sampled every `window`.
pub async fn run(
    env: &Env,
    pairs: &Pairs,
    sustainable: f64,
    secs: u64,
    window: Duration,
) -> Res<Soak> {
    let offered = (sustainable * LOAD).max(1.0);
    let windows = (secs / window.as_secs().max(1)).max(1) as usize;
    let hists: Arc<Vec<Mutex<Histogram<u64>>>> =
        Arc::new((0..windows).map(|_| Mutex::new(hist())).collect());
    let counter =
        || -> Arc<Vec<AtomicU64>> { Arc::new((0..windows).map(|_| AtomicU64::new(0)).collect()) };
    let (refused, failed) = (counter(), counter());
    let c = super::client()?;
    let run = rand::random::<u32>();
    let start = tokio::time::Instant::now();
    // Memory at each window's end, read while the load runs.
    let sampler = tokio::spawn(async move {
        let mut rss = Vec::with_capacity(windows);
        for w in 1..=windows {
            tokio::time::sleep_until(start + window * w as u32).await;
            rss.push(cpu::rss_by_class());
        }
        rss
    });
    eprintln!(
        "soak: {offered:.0} sends/s ({:.0} % of {sustainable:.0}/s) for {secs} s",
        LOAD * 100.0
    );
    let n = (offered * (windows as u64 * window.as_secs()) as f64) as u64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / offered);
        tokio::time::sleep_until(at).await;
        let w = ((at - start).as_secs() / window.as_secs().max(1)) as usize;
        let (user, conv) = pairs[i as usize % pairs.len()].clone();
        let (c, base, hists) = (c.clone(), env.base.clone(), hists.clone());
        let (refused, failed) = (refused.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let client_id = format!("soak{run:x}-{i}");
            let content = format!("soak message {i} with some ordinary words in it");
            let answer = send_once(&c, &base, &user, &conv, &client_id, &content)
                .await
                .answer;
            let slot = w.min(hists.len() - 1);
            match answer {
                Answer::Accepted => {
                    if let Ok(mut h) = hists[slot].lock() {
                        let _ = h.record(at.elapsed().as_micros() as u64);
                    }
                }
                Answer::Refused => {
                    refused[slot].fetch_add(1, Ordering::Relaxed);
                }
                Answer::Failed => {
                    failed[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        // Finished tasks are let go as the run goes, so the list stays short.
        if tasks.len() > 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let rss = sampler.await.unwrap_or_default();
    let windows = (0..windows)
        .map(|w| Window {
            at_secs: (w as u64 + 1) * window.as_secs(),
            sends: hists[w].lock().map(|h| Lat::of(&h)).unwrap_or_default(),
            refused: refused[w].load(Ordering::Relaxed),
            failed: failed[w].load(Ordering::Relaxed),
            rss_kib: rss.get(w).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(Soak {
        sustainable,
        offered,
        window_secs: window.as_secs(),
        windows,
    })
}

/// The soak's report (Markdown).
pub fn markdown(s: &Soak, machine: &serde_json::Value) -> String {
    let mut md = format!(
        "# Switchboard soak\n\nMachine: {} × {} cores; {}. Run {}.\n\n\
         Sends at {:.0} % of the sustainable rate ({:.0} of {:.0} messages/s, closed loop \
         measured just before), open loop for {} s; latency from each send's scheduled start.\n\n\
         | at | accepted | p50 | p99 | max | refused (Retry-After) | failed | resident memory (KiB) |\n|---|---|---|---|---|---|---|---|\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["stack"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or(""),
        LOAD * 100.0,
        s.offered,
        s.sustainable,
        s.windows.len() as u64 * s.window_secs,
    );
    for w in &s.windows {
        let rss: Vec<String> = w.rss_kib.iter().map(|(c, k)| format!("{c} {k}")).collect();
        md.push_str(&format!(
            "| {} s | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} |\n",
            w.at_secs,
            w.sends.count,
            w.sends.p50,
            w.sends.p99,
            w.sends.max,
            w.refused,
            w.failed,
            rss.join(", ")
        ));
    }
    if let (Some(first), Some(last)) = (s.windows.first(), s.windows.last()) {
        md.push_str(&format!(
            "\nDrift, first window → last: p50 {:.1} → {:.1} ms, p99 {:.1} → {:.1} ms.\n",
            first.sends.p50, last.sends.p50, first.sends.p99, last.sends.p99
        ));
    }
    for (class, a, b) in s.memory_drift() {
        md.push_str(&format!(
            "- {class}: {a} → {b} KiB ({:+.1} %)\n",
            (b as f64 - a as f64) / (a.max(1) as f64) * 100.0
        ));
    }
    md
}
