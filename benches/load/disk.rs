//! The disk under the database: how long a durable write takes on the file system that holds
//! PostgreSQL's WAL, while each scenario runs.
//!
//! Every commit on the primary waits for its WAL to reach the disk (`synchronous_commit =
//! on`, WAL flushed with `fdatasync`: PostgreSQL docs §30.5 "WAL Configuration"), so a
//! send can never answer faster than the disk syncs, and a disk that stalls holds every
//! send in flight for as long. A probe thread writes 8 KiB (one WAL page) to a file of its
//! own on that file system and `fdatasync`s it, the syncs 10 ms apart, for the whole run; a
//! scenario's window of those syncs says what the disk alone gave in the same seconds,
//! beside the stack's latencies — a tail the disk already had is not the stack's.
//!
//! The probe is load on the disk it measures: up to 100 more flushes a second beside
//! PostgreSQL's own, in every scenario and in the raw limits alike (so the ratios stay like
//! for like). `BENCH_DISK_PROBE=0` runs without it.

use std::{
    io::Write,
    os::unix::fs::FileExt,
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// A sync slower than this (ms) is listed as a stall.
pub const STALL_MS: f64 = 50.0;

/// Pause between two syncs (so at most 100 a second): a small share of what the primary
/// does itself.
const EVERY: Duration = Duration::from_millis(10);

/// One probe write's size: a WAL page (`XLOG_BLCKSZ`, 8 KiB by default).
const PAGE: usize = 8192;

/// Pages the probe file cycles over (1 MiB), so it stays small.
const PAGES: u64 = 128;

/// The running probe: each sync's start (s since the probe started) and duration (ms).
struct Probe {
    started: Instant,
    syncs: Arc<Mutex<Vec<(f64, f64)>>>,
}

static PROBE: OnceLock<Probe> = OnceLock::new();

/// Starts the probe on `dir`'s file system (a file `fsync-probe` in it), once per run,
/// unless `BENCH_DISK_PROBE=0`. Without it (off, or the file could not be made) windows
/// are empty.
///
/// Errors: the probe file cannot be created.
pub fn start(dir: &Path) -> std::io::Result<()> {
    if std::env::var("BENCH_DISK_PROBE").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let probe = Probe {
        started: Instant::now(),
        syncs: Arc::new(Mutex::new(Vec::new())),
    };
    let (syncs, started) = (probe.syncs.clone(), probe.started);
    if PROBE.set(probe).is_err() {
        return Ok(());
    }
    std::thread::spawn(move || {
        let page = [b'w'; PAGE];
        for n in 0u64.. {
            let at = started.elapsed().as_secs_f64();
            let t = Instant::now();
            let written = file
                .write_all_at(&page, (n % PAGES) * PAGE as u64)
                .and_then(|()| file.sync_data());
            if written.is_err() {
                break;
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            match syncs.lock() {
                Ok(mut s) => s.push((at, ms)),
                Err(_) => break,
            }
            std::thread::sleep(EVERY);
        }
        let _ = std::io::stderr().write_all(b"disk probe stopped\n");
    });
    Ok(())
}

/// Seconds since the probe started (0 without a probe): a window's bounds.
pub fn now() -> f64 {
    PROBE
        .get()
        .map_or(0.0, |p| p.started.elapsed().as_secs_f64())
}

/// What the disk did over one scenario (or phase).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub scenario: String,
    pub secs: f64,
    /// Syncs that started within the window.
    pub syncs: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Syncs over [`STALL_MS`] that overlapped the window: (s from the window's start —
    /// negative for one that began before it — and ms).
    pub stalls: Vec<(f64, f64)>,
}

impl Window {
    /// The syncs between `from` and `to` ([`now`] values), as `scenario`: the latencies of
    /// those that started in it, the stalls that overlapped it. A sync still running now is
    /// not in it: take a window once its end has passed by a stall's length, when one may
    /// matter.
    pub fn between(scenario: &str, from: f64, to: f64) -> Self {
        let mut w = Window {
            scenario: scenario.to_owned(),
            secs: to - from,
            ..Default::default()
        };
        let Some(syncs) = PROBE
            .get()
            .and_then(|p| p.syncs.lock().ok().map(|s| s.clone()))
        else {
            return w;
        };
        let mut h: Histogram<u64> = super::hist();
        for &(at, ms) in &syncs {
            if (from..to).contains(&at) {
                let _ = h.record(((ms * 1000.0) as u64).clamp(1, h.high()));
            }
            if ms > STALL_MS && at < to && at + ms / 1000.0 > from {
                w.stalls.push((at - from, ms));
            }
        }
        let lat = super::Lat::of(&h);
        (w.syncs, w.p50_ms, w.p99_ms, w.max_ms) = (lat.count, lat.p50, lat.p99, lat.max);
        w
    }

    /// The longest stall (ms) that overlapped second `second` of the window, if any.
    pub fn stalled_in(&self, second: u64) -> Option<f64> {
        let (from, to) = (second as f64, second as f64 + 1.0);
        self.stalls
            .iter()
            .filter(|(at, ms)| *at < to && at + ms / 1000.0 > from)
            .map(|(_, ms)| *ms)
            .reduce(f64::max)
    }

    /// The stalls as "456 ms at 3.2 s, …" (at most `n`, longest first), or "none".
    pub fn stall_list(&self, n: usize) -> String {
        if self.stalls.is_empty() {
            return "none".into();
        }
        let mut s = self.stalls.clone();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut list: Vec<String> = s
            .iter()
            .take(n)
            .map(|(at, ms)| format!("{ms:.0} ms at {at:.1} s"))
            .collect();
        if s.len() > n {
            list.push(format!("{} more", s.len() - n));
        }
        list.join(", ")
    }
}
