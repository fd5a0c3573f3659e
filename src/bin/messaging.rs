//! The messaging service binary: settings (`messaging --help`), telemetry, run.

use switchboard::platform::{config, telemetry};

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
