//! How many sends each group commit took while a scenario ran, from the messaging
//! instances' own metrics: `switchboard_send_batch_size`'s sum (sends, those the statement
//! refused included) and count (batches), read from every instance before and after
//! (Prometheus text exposition format).
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
    /// Sends taken into batches.
    pub sends: f64,
    /// Group commits.
    pub batches: f64,
}

impl Window {
    /// The window between two [`sample`]s, over the instances that answered both (one
    /// that missed either is left out, not counted from zero).
    pub fn between(
        scenario: &str,
        before: &[Option<(f64, f64)>],
        after: &[Option<(f64, f64)>],
    ) -> Self {
        let (mut sends, mut batches) = (0.0, 0.0);
        for (b, a) in before.iter().zip(after) {
            if let (Some(b), Some(a)) = (b, a) {
                sends += (a.0 - b.0).max(0.0);
                batches += (a.1 - b.1).max(0.0);
            }
        }
        Self {
            scenario: scenario.into(),
            sends,
            batches,
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

/// Each instance's sends and batches counted so far, in [`endpoints`] order; `None` for
/// one that did not answer within 2 s.
pub async fn sample() -> Vec<Option<(f64, f64)>> {
    let urls = endpoints();
    let Ok(client) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    else {
        return vec![None; urls.len()];
    };
    let mut counts = Vec::with_capacity(urls.len());
    for url in urls {
        let text = async { client.get(&url).send().await?.text().await }.await;
        counts.push(text.ok().map(|t| totals(&t)));
    }
    counts
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
