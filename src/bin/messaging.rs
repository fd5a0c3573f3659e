//! The messaging service binary: settings (`messaging --help`), telemetry, run.

use switchboard::platform::{config, telemetry};

/// mimalloc: fewer cycles per allocation than the system allocator on the request path,
/// and memory returned to the system under churn (many short-lived sockets and buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cfg: config::MessagingConfig = config::parse();
    let telemetry = telemetry::init("messaging", &cfg.logs);
    let result = match cfg.resolve() {
        Ok(cfg) => switchboard::startup::run_messaging(cfg).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "messaging service stopped");
    }
    telemetry.shutdown();
    result
}
