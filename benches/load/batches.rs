//! How many sends each group commit appended while a scenario ran, from the messaging
//! instances' own metrics: `switchboard_send_batch_size`'s sum (sends) and count (batches),
//! read from every instance before and after (Prometheus text exposition format).
//!
//! A batch holds what queued while the one before it ran, so its size follows the load: an
//! evenly spaced open loop gives smaller batches than a closed loop of as many users at a
//! higher rate, and each batch costs the primary a fixed part (the statement's start-up,
//! the commit) whatever its size. The mean says which of the two a scenario's CPU per send
//! was paying for.

/// One scenario's sends and batches, over all instances.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub scenario: String,
    /// Sends appended by group commits.
    pub sends: f64,
    /// Group commits.
    pub batches: f64,
}

impl Window {
    /// The window between two [`sample`]s.
    pub fn between(scenario: &str, before: (f64, f64), after: (f64, f64)) -> Self {
        Self {
            scenario: scenario.into(),
            sends: (after.0 - before.0).max(0.0),
            batches: (after.1 - before.1).max(0.0),
        }
    }

    /// Sends per batch on average; `None` without a batch (or without the metrics).
    pub fn mean(&self) -> Option<f64> {
        (self.batches > 0.0).then(|| self.sends / self.batches)
    }
}

/// The metrics addresses of the messaging instances: `MESSAGING_METRICS_PORT` and the
/// `MESSAGING_INSTANCES - 1` ports after it (scripts/common.sh); none when unset.
fn endpoints() -> Vec<String> {
    let port = std::env::var("MESSAGING_METRICS_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let instances = std::env::var("MESSAGING_INSTANCES")
        .ok()
        .and_then(|n| n.parse::<u16>().ok())
        .unwrap_or(1);
    port.map(|p| {
        (0..instances)
            .map(|n| format!("http://127.0.0.1:{}/metrics", p + n))
            .collect()
    })
    .unwrap_or_default()
}

/// The sends and batches counted so far, summed over every instance that answered.
pub async fn sample() -> (f64, f64) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    else {
        return (0.0, 0.0);
    };
    let mut total = (0.0, 0.0);
    for url in endpoints() {
        let Ok(text) = async { client.get(&url).send().await?.text().await }.await else {
            continue;
        };
        let (sum, count) = totals(&text);
        total.0 += sum;
        total.1 += count;
    }
    total
}

/// `switchboard_send_batch_size`'s `_sum` and `_count` in one exposition (0 when absent).
fn totals(exposition: &str) -> (f64, f64) {
    let value = |name: &str| {
        exposition
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    (
        value("switchboard_send_batch_size_sum"),
        value("switchboard_send_batch_size_count"),
    )
}
