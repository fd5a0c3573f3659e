//! The messaging service binary: configuration, telemetry, run.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchboard::platform::telemetry::init("messaging");
    let result = match switchboard::platform::config::MessagingConfig::from_env() {
        Ok(cfg) => switchboard::startup::run_messaging(cfg).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "messaging service stopped");
    }
    telemetry.shutdown();
    result
}
