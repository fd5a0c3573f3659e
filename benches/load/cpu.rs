//! Where the cores went: CPU seconds (user + system) per process class over a scenario,
//! read from `/proc/<pid>/stat` before and after it. Classes: NGINX, each service, PostgreSQL
//! processes by cluster (primary, replicas) and kind — client backends by role, the WAL
//! sender and receiver, WAL replay (`startup`), the background processes — pgbench, and this
//! load generator. A process that ended within the scenario (short-lived backends) is not
//! counted: the stack's pools keep theirs.
//!
//! Beside them, what the host took: on a virtual machine the hypervisor may run other
//! guests on our virtual CPUs while our processes wait for them ("steal", `/proc/stat`,
//! proc(5)). Stolen time is no process's, yet every process waited through it: a scenario
//! that lost a tenth of its cores to the host ran on a smaller machine than the one named.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` times (USER_HZ, 100 on
/// Linux).
const TICKS: f64 = 100.0;

/// CPU seconds so far of every classified process, and the machine's stolen time.
pub struct Sample {
    procs: HashMap<u32, (String, f64)>,
    steal: Steal,
}

/// A reading of the time the hypervisor has stolen from this machine's CPUs, to tell the
/// share of a stretch of time it stole ([`Steal::share_until`]).
#[derive(Debug, Clone, Copy)]
pub struct Steal {
    /// Stolen CPU seconds since boot, all CPUs together (`None` where `/proc/stat` could
    /// not be read).
    secs: Option<f64>,
    at: Instant,
}

impl Steal {
    /// Reads the stolen time now: the eighth figure of `/proc/stat`'s `cpu` line (proc(5)).
    pub fn now() -> Self {
        let secs = read("/proc/stat".into())
            .and_then(|s| {
                s.lines()
                    .next()?
                    .split_whitespace()
                    .nth(8)?
                    .parse::<f64>()
                    .ok()
            })
            .map(|ticks| ticks / TICKS);
        Self {
            secs,
            at: Instant::now(),
        }
    }

    /// The share (0–1) of every core's time from this reading to `later` that the host
    /// gave to others: stolen seconds ÷ (wall seconds × cores); 0 when either reading
    /// failed.
    pub fn share_until(&self, later: &Steal) -> f64 {
        let wall = later.at.saturating_duration_since(self.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        match (self.secs, later.secs) {
            (Some(from), Some(to)) if wall > 0.0 => ((to - from) / (wall * cores)).clamp(0.0, 1.0),
            _ => 0.0,
        }
    }
}

/// CPU seconds per class within one scenario, biggest first.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub scenario: String,
    pub wall_secs: f64,
    pub by_class: Vec<(String, f64)>,
    /// The share (0–1) of the cores' time the host stole meanwhile ([`Steal`]).
    #[serde(default)]
    pub stolen_share: f64,
}

impl Usage {
    /// Every class's CPU seconds together.
    pub fn total(&self) -> f64 {
        self.by_class.iter().map(|(_, s)| s).sum()
    }
}

fn read(path: String) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `(ppid, user + system seconds)` of a process.
fn times(pid: u32) -> Option<(u32, f64)> {
    let stat = read(format!("/proc/{pid}/stat"))?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((ppid, (utime + stime) / TICKS))
}

fn cmdline(pid: u32) -> String {
    read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ")
        .trim()
        .to_owned()
}

/// The cluster a PostgreSQL postmaster serves, from its `-D <dir>` (the folder's name:
/// `primary`, `replica1`, …).
fn cluster(postmaster_cmdline: &str) -> Option<String> {
    let mut words = postmaster_cmdline.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-D" {
            let dir = words.next()?;
            return std::path::Path::new(dir.trim_end_matches('/'))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
        }
    }
    None
}

/// The class of a process, or `None` for one this benchmark does not account for.
fn classify(
    pid: u32,
    ppid: u32,
    cmd: &str,
    me: u32,
    postmasters: &HashMap<u32, String>,
) -> Option<String> {
    if pid == me {
        return Some("load generator".into());
    }
    if let Some(c) = postmasters.get(&pid) {
        return Some(format!("pg {c}: postmaster"));
    }
    if let Some(c) = postmasters.get(&ppid) {
        let title = cmd.strip_prefix("postgres: ").unwrap_or(cmd);
        let first = title.split_whitespace().next().unwrap_or("");
        let kind = match first {
            "walsender" => "WAL sender".to_owned(),
            "walreceiver" => "WAL receiver".to_owned(),
            "startup" => "WAL replay".to_owned(),
            "checkpointer" | "background" | "walwriter" | "autovacuum" | "logical" | "archiver"
            | "stats" => "background".to_owned(),
            role => format!("{role} backends"),
        };
        return Some(format!("pg {c}: {kind}"));
    }
    let exe = cmd.split_whitespace().next().unwrap_or("");
    let name = std::path::Path::new(exe)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "auth" | "messaging" | "pgbench" => Some(name),
        _ if cmd.starts_with("nginx") => Some("nginx".into()),
        _ => None,
    }
}

/// Reads every process now.
pub fn sample() -> Sample {
    Sample {
        procs: classified()
            .into_iter()
            .map(|(pid, class, secs)| (pid, (class, secs)))
            .collect(),
        steal: Steal::now(),
    }
}

/// Resident memory (VmRSS, KiB) summed per process class now, by class name.
pub fn rss_by_class() -> Vec<(String, u64)> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for (pid, class, _) in classified() {
        let kib = read(format!("/proc/{pid}/status"))
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        *by.entry(class).or_default() += kib;
    }
    by.into_iter().collect()
}

/// Every classified process now: `(pid, class, CPU seconds so far)`.
fn classified() -> Vec<(u32, String, f64)> {
    let me = std::process::id();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let procs: Vec<(u32, u32, f64, String)> = pids
        .into_iter()
        .filter_map(|pid| {
            let (ppid, secs) = times(pid)?;
            Some((pid, ppid, secs, cmdline(pid)))
        })
        .collect();
    let postmasters: HashMap<u32, String> = procs
        .iter()
        .filter(|(_, _, _, cmd)| {
            cmd.split_whitespace()
                .next()
                .is_some_and(|exe| exe.ends_with("/postgres") || exe == "postgres")
                && cmd.contains(" -D ")
        })
        .filter_map(|(pid, _, _, cmd)| Some((*pid, cluster(cmd)?)))
        .collect();
    procs
        .into_iter()
        .filter_map(|(pid, ppid, secs, cmd)| {
            Some((pid, classify(pid, ppid, &cmd, me, &postmasters)?, secs))
        })
        .collect()
}

/// CPU seconds per class between two samples, biggest first (a process new in `after`
/// counts from zero).
pub fn usage(scenario: &str, wall_secs: f64, before: &Sample, after: &Sample) -> Usage {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, (class, secs)) in &after.procs {
        let was = before
            .procs
            .get(pid)
            .filter(|(c, _)| c == class)
            .map(|(_, s)| *s)
            .unwrap_or(0.0);
        *by.entry(class.clone()).or_default() += (secs - was).max(0.0);
    }
    let mut by_class: Vec<(String, f64)> = by.into_iter().filter(|(_, s)| *s >= 0.01).collect();
    by_class.sort_by(|a, b| b.1.total_cmp(&a.1));
    Usage {
        scenario: scenario.into(),
        wall_secs,
        by_class,
        stolen_share: before.steal.share_until(&after.steal),
    }
}
