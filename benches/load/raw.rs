//! The database's own limits, measured with `pgbench -M prepared` in the same run as the
//! stack, like for like with what the stack does:
//!
//! - insert: one row per transaction into `bench.messages`, a copy of `messaging.messages`
//!   (same columns, generated search vector, indexes) with its foreign key to
//!   `messaging.conversations`, UUIDv7 ids, a `client_id`, each pgbench client writing to
//!   its own benchmark user's real conversation — as many clients as the stack has users;
//! - select: the newest-50 page of a benchmark conversation on the replica, each client
//!   reading its own;
//! - the group commit alone: the very statements a messaging writer runs (BEGIN, the lock,
//!   `APPEND_PLAIN_BATCH`, as the service runs it for sends that neither reply nor mention,
//!   `QUEUE_NOTIFICATIONS`, COMMIT, `pg_current_wal_lsn()`), over as many
//!   connections as the stack has writers, with batches of a fixed size — the database part of a send without HTTP,
//!   JSON, NGINX or fan-out.
//!
//! Each limit is taken in several short runs before and after its scenario; the figure is
//! the median of all runs (the report shows the spread).
//!
//! pgbench connects over TLS (`PGSSLMODE=require`), as every service connection does
//! (`postgres/pg_hba.conf` refuses the service roles without it): the encryption of each
//! query and answer is part of what the stack pays per request, so the limit pays it too.
//! `PGSSLMODE=disable` in the environment takes the plaintext limit instead (for comparison).

use super::{admin, Pairs, Res};

/// What pgbench measured: the median over `runs` (transactions per second each).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Raw {
    /// Median transactions (or, for the group commit, sends) per second.
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub clients: usize,
    pub script: String,
    /// libpq's `sslmode` for pgbench's connections (`require`: TLS, as the services).
    #[serde(default)]
    pub sslmode: String,
    /// Each run's figure, in the order taken.
    #[serde(default)]
    pub runs: Vec<f64>,
    /// The share (0–1) of the cores the host stole during each run
    /// ([`super::cpu::Steal`]), in the order taken.
    #[serde(default)]
    pub stolen_shares: Vec<f64>,
}

impl Raw {
    /// Adds the runs of `other` (the same script, taken later) and takes the median again.
    pub fn merge(&mut self, other: Raw) {
        if self.script.is_empty() {
            *self = other;
            return;
        }
        self.runs.extend(other.runs);
        self.stolen_shares.extend(other.stolen_shares);
        self.tps = median(&self.runs);
        self.latency_avg_ms = (self.latency_avg_ms + other.latency_avg_ms) / 2.0;
    }

    /// The least and most share of the cores the host stole in a run; `None` for a run
    /// that recorded none.
    pub fn steal_range(&self) -> Option<(f64, f64)> {
        let most = self.stolen_shares.iter().copied().reduce(f64::max)?;
        Some((
            self.stolen_shares.iter().copied().fold(most, f64::min),
            most,
        ))
    }

    /// The lowest and highest run.
    pub fn spread(&self) -> (f64, f64) {
        let lo = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = self.runs.iter().copied().fold(0.0, f64::max);
        (if lo.is_finite() { lo } else { 0.0 }, hi)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn pgbench_path() -> String {
    if let Ok(p) = std::env::var("PGBENCH") {
        return p;
    }
    for v in ["17", "16", "15"] {
        let p = format!("/usr/lib/postgresql/{v}/bin/pgbench");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    "pgbench".into()
}

/// Runs pgbench `runs` times for `secs` each with `script` against `url` (a postgres://
/// URL); `per_tx` scales transactions to the unit reported (sends per batch).
pub fn pgbench(
    url: &str,
    script: &str,
    clients: usize,
    runs: usize,
    secs: u64,
    per_tx: f64,
) -> Res<Raw> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("script.sql");
    std::fs::write(&file, script)?;
    let sslmode = std::env::var("PGSSLMODE").unwrap_or_else(|_| "require".into());
    let mut out = Raw {
        clients,
        script: script.trim().into(),
        sslmode: sslmode.clone(),
        ..Default::default()
    };
    let mut latency = 0.0;
    for _ in 0..runs.max(1) {
        let steal = super::cpu::Steal::now();
        let run = std::process::Command::new(pgbench_path())
            .env("PGSSLMODE", &sslmode)
            .args([
                "-n",
                "-M",
                "prepared",
                "-D",
                "looked=0",
                "-c",
                &clients.to_string(),
            ])
            .args(["-j", &clients.min(2).to_string(), "-T", &secs.to_string()])
            .arg("-f")
            .arg(&file)
            .arg(url)
            .output()?;
        let text = String::from_utf8_lossy(&run.stdout).to_string();
        if !run.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(
                format!("pgbench: {} {}", text, String::from_utf8_lossy(&run.stderr)).into(),
            );
        }
        let number = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l[prefix.len()..].split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.runs.push(number("tps = ") * per_tx);
        out.stolen_shares
            .push(steal.share_until(&super::cpu::Steal::now()));
        latency += number("latency average = ");
    }
    // The script is in `out`; its file goes (each run of the benchmark left one behind).
    let _ = std::fs::remove_dir_all(&dir);
    out.tps = median(&out.runs);
    out.latency_avg_ms = latency / out.runs.len() as f64;
    Ok(out)
}

/// Each pgbench client's own benchmark user and conversation (`:conv`, `:snd`), looked up
/// once per client: pgbench variables outlive a transaction, and `looked` starts at 0 for
/// every client (`-D`).
fn own_pair(pairs: usize) -> String {
    format!(
        "\\if :looked = 0
SELECT conversation_id AS conv, sender_id AS snd, 1 AS looked FROM bench.pairs WHERE n = :client_id % {pairs} + 1 \\gset
\\endif
"
    )
}

/// A UUIDv7 made in SQL (PostgreSQL 15 has no `uuidv7()`): 48 bits of Unix milliseconds,
/// the version and variant nibbles, random bits (RFC 9562 §5.7).
const UUID_V7: &str = "(lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid";

/// The insert limit's script.
fn insert_script(pairs: usize) -> String {
    format!(
        "{}\\set seq random(1, 1000000000000)
INSERT INTO bench.messages (id, conversation_id, seq, sender_id, kind, content, client_id, rev, created_rev)
VALUES ({UUID_V7}, :conv, :seq, :snd, 'text', 'bench message with some ordinary words in it',
        :client_id || '-' || :seq, :seq, :seq);
",
        own_pair(pairs)
    )
}

/// The select limit's script.
fn select_script(pairs: usize) -> String {
    format!(
        "{}SELECT m.* FROM messaging.messages m WHERE m.conversation_id = :conv
ORDER BY m.seq DESC LIMIT 50;
",
        own_pair(pairs)
    )
}

/// The group commit's script: batches of `batch` sends from consecutive benchmark users,
/// with the writer's own statements in the writer's two round trips (pgbench pipelines:
/// BEGIN, the lock, the batch and its queueing; then COMMIT and the WAL position); the writer's parameters
/// become SQL over `bench.pairs`.
fn group_commit_script(pairs: usize, batch: usize) -> Res<String> {
    use switchboard::messaging::group_commit::{
        BatchShape, BEGIN_BATCH, LOCK_CONVERSATIONS, QUEUE_NOTIFICATIONS,
    };
    let of = |column: &str| {
        format!(
            "ARRAY(SELECT {column} FROM bench.pairs WHERE n >= :lo AND n < :lo + {batch} ORDER BY n)"
        )
    };
    // The ids are named twice (the batch and its queueing for notifications), so unlike
    // [`UUID_V7`] they must come out the same both times: UUIDv7 from the transaction's
    // start (`now()`, the same in both statements) and a hash of this transaction's random
    // draw and the pair.
    let id = "(lpad(to_hex(floor(extract(epoch FROM now()) * 1000)::bigint), 12, '0') || '7' \
              || substr(md5(:r1 || '-' || :r2 || '-' || n), 1, 3) || '8' \
              || substr(md5(:r1 || '-' || :r2 || '-' || n), 4, 15))::uuid";
    let params = [
        of(id),
        of("conversation_id"),
        of("sender_id"),
        of("'bench message with some ordinary words in it'::text"),
        of("NULL::uuid"),
        of("md5(random()::text)"),
        "1000000000::int8".to_owned(),
        "10::float8".to_owned(),
        // No mentions (`$9` names, `$10` `@all`), members may not mention all (`$11`).
        of("''::text"),
        of("false"),
        "false".to_owned(),
        // Normal priority (`$12`), no thread (`$13`).
        of("'normal'::text"),
        of("NULL::uuid"),
    ];
    let bind = |sql: &str, map: &[String]| -> Res<String> {
        let mut out = String::with_capacity(sql.len() * 2);
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let digits: String = rest[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let n: usize = digits.parse().map_err(|_| format!("a bare $ in {sql}"))?;
            let value = map
                .get(n.wrapping_sub(1))
                .ok_or(format!("no value for ${n}"))?;
            out.push_str(value);
            rest = &rest[at + 1 + digits.len()..];
        }
        out.push_str(rest);
        Ok(out)
    };
    let lock = bind(LOCK_CONVERSATIONS, &params[1..3])?;
    // The statement the service runs for these sends (no reply, thread or mention).
    let append = bind(BatchShape::Plain.statement(), &params)?;
    let queue = bind(QUEUE_NOTIFICATIONS, &params[..1])?;
    // One line per statement for pgbench: SQL comments (`--` to the end of a line) go first,
    // or they would swallow the rest of the statement.
    let flat = |s: &str| {
        s.lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(format!(
        "\\set lo random(1, {})
\\set r1 random(0, 9223372036854775806)
\\set r2 random(0, 9223372036854775806)
\\startpipeline
{};
{};
{};
{};
\\endpipeline
\\startpipeline
COMMIT;
SELECT pg_current_wal_lsn();
\\endpipeline
",
        pairs + 1 - batch,
        // pgbench ends a command at `;` and prepares each alone; one per line reads plainly.
        BEGIN_BATCH.replace("; ", ";\n"),
        flat(&lock),
        flat(&append),
        flat(&queue)
    ))
}

/// `bench.pairs` on the primary (the benchmark users and their conversations), visible on
/// the replica at `replica` before this returns.
pub async fn prepare(primary: &str, replica: &str, pairs: &Pairs) -> Res<()> {
    let p = admin(primary).await?;
    p.batch_execute(
        "DROP SCHEMA IF EXISTS bench CASCADE;
         CREATE SCHEMA bench;
         CREATE TABLE bench.pairs (n int PRIMARY KEY, conversation_id uuid NOT NULL,
                                   sender_id uuid NOT NULL);
         CREATE TABLE bench.messages (LIKE messaging.messages INCLUDING ALL,
             FOREIGN KEY (conversation_id) REFERENCES messaging.conversations (id)
                 ON DELETE CASCADE,
             FOREIGN KEY (reply_to) REFERENCES bench.messages (id),
             FOREIGN KEY (attachment_id) REFERENCES messaging.attachments (id)
                 ON DELETE SET NULL);",
    )
    .await?;
    for (i, (user, conv)) in pairs.iter().enumerate() {
        let conv: uuid::Uuid = conv.parse()?;
        let sender: uuid::Uuid = user.id.parse()?;
        p.execute(
            "INSERT INTO bench.pairs VALUES ($1, $2, $3)",
            &[&(i as i32 + 1), &conv, &sender],
        )
        .await?;
    }
    let r = admin(replica).await?;
    for _ in 0..100 {
        let n: i64 = r
            .query_one("SELECT count(*) FROM bench.pairs", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if n as usize == pairs.len() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err("bench.pairs did not reach the replica".into())
}

/// Drops the benchmark's tables.
pub async fn clean(primary: &str) -> Res<()> {
    admin(primary)
        .await?
        .batch_execute("DROP SCHEMA IF EXISTS bench CASCADE")
        .await?;
    Ok(())
}

/// A one-statement limit: inserts per second on the primary, or newest-50 pages per second
/// on the replica.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Insert,
    Select,
}

impl Limit {
    /// `runs` runs of `secs` with `clients` clients against `url`.
    pub fn measure(
        self,
        url: &str,
        pairs: usize,
        clients: usize,
        runs: usize,
        secs: u64,
    ) -> Res<Raw> {
        let script = match self {
            Limit::Insert => insert_script(pairs),
            Limit::Select => select_script(pairs),
        };
        pgbench(url, &script, clients, runs, secs, 1.0)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Limit::Insert => "inserts/s",
            Limit::Select => "selects/s",
        }
    }
}

/// Sends per second through the group commit alone, in batches of `batch`, over `writers`
/// connections.
pub fn group_commit_limit(
    primary: &str,
    pairs: usize,
    writers: usize,
    batch: usize,
    runs: usize,
    secs: u64,
) -> Res<Raw> {
    let batch = batch.clamp(1, pairs.max(1));
    pgbench(
        primary,
        &group_commit_script(pairs, batch)?,
        writers,
        runs,
        secs,
        batch as f64,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
