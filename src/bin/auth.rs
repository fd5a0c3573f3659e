//! The auth service binary: settings (`auth --help`), telemetry, run.

use switchboard::platform::{config, telemetry};

/// mimalloc: fewer cycles per allocation than the system allocator on the request path,
/// and memory returned to the system under churn (many short-lived sockets and buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cfg: config::AuthConfig = config::parse();
    let telemetry = telemetry::init("auth", &cfg.logs);
    let result = match cfg.resolve() {
        Ok(cfg) => switchboard::startup::run_auth(cfg).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "auth service stopped");
    }
    telemetry.shutdown();
    result
}
