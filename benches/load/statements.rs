//! Where the primary's time went in a scenario, statement by statement: the services'
//! statements that ran longest in total, from `pg_stat_statements` (PostgreSQL docs
//! §F.32), reset when the scenario starts and read when it ends.
//!
//! scripts/bench.sh loads the module into the benchmark's clusters
//! (`shared_preload_libraries`, through `PG_SERVER_OPTIONS`); without it, nothing is
//! recorded and the report leaves the section out. Times are the executor's wall time
//! (`total_exec_time`, planning not included): a statement that waited on a lock or the
//! disk counts its wait, so this says which statement held the primary, where the CPU
//! table says which process class spent the cores.

/// Statements kept per scenario.
const TOP: i64 = 6;

/// One statement's share of a scenario.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Statement {
    /// The role that ran it (`switchboard_messaging`, `switchboard_auth`).
    pub role: String,
    /// The statement's text as PostgreSQL recorded it — normalised (constants as `$n`) when
    /// it was planned after the reset, as written when it was prepared before, so one
    /// statement may show under both — whitespace collapsed, cut to 100 characters.
    pub text: String,
    pub calls: i64,
    /// Milliseconds in the executor, all calls.
    pub total_ms: f64,
    /// Rows returned or changed, all calls.
    pub rows: i64,
}

/// One scenario's longest-running statements, longest first.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub scenario: String,
    /// Every service statement's executor time together, in milliseconds.
    pub all_ms: f64,
    pub top: Vec<Statement>,
}

/// An admin connection to the primary (`SWITCHBOARD_PRIMARY_ADMIN_URL`) with
/// `pg_stat_statements` loaded and installed (created here if missing); `None` when there is
/// no such URL or the module is not loaded.
async fn connect() -> Option<tokio_postgres::Client> {
    let url = std::env::var("SWITCHBOARD_PRIMARY_ADMIN_URL").ok()?;
    let c = super::admin(&url).await.ok()?;
    let preloaded: String = c
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .ok()?
        .get(0);
    if !preloaded.contains("pg_stat_statements") {
        return None;
    }
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .ok()?;
    Some(c)
}

/// Forgets every statement counted so far; false when the module is not loaded.
pub async fn reset() -> bool {
    match connect().await {
        Some(c) => c
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await
            .is_ok(),
        None => false,
    }
}

/// The service roles' statements since the last [`reset`], as `scenario`; `None` when the
/// module is not loaded.
pub async fn read(scenario: &str) -> Option<Window> {
    let c = connect().await?;
    let rows = c
        .query(
            "SELECT r.rolname, s.query, s.calls, s.total_exec_time, s.rows,
                    sum(s.total_exec_time) OVER () AS all_ms
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname LIKE 'switchboard\\_%'
             ORDER BY s.total_exec_time DESC",
            &[],
        )
        .await
        .ok()?;
    let all_ms = rows.first().map_or(0.0, |r| r.get::<_, f64>("all_ms"));
    let top = rows
        .iter()
        .take(TOP as usize)
        .map(|r| Statement {
            role: r.get("rolname"),
            text: one_line(r.get("query"), 100),
            calls: r.get("calls"),
            total_ms: r.get("total_exec_time"),
            rows: r.get("rows"),
        })
        .collect();
    Some(Window {
        scenario: scenario.into(),
        all_ms,
        top,
    })
}

/// `sql` without its comments (`-- …` to the end of a line), its whitespace collapsed, cut
/// to `max` characters (with "…").
fn one_line(sql: &str, max: usize) -> String {
    let words: Vec<&str> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .collect();
    let text = words.join(" ");
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
