//! Log setup shared by both binaries.
//!
//! `LOG_FORMAT=json` writes one JSON object per line (timestamp, level, target, fields,
//! and the current spans, which carry `trace_id` and `request_id`); anything else writes the
//! human format. The filter is `RUST_LOG` (default `info`). Tokens, passwords and message
//! content are never put in fields.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::var_or("LOG_FORMAT", "pretty") == "json";
    if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .compact()
            .init();
    }
    tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
}
