//! The auth service binary: configuration, telemetry, run.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchboard::platform::telemetry::init("auth");
    let result = match switchboard::platform::config::AuthConfig::from_env() {
        Ok(cfg) => switchboard::startup::run_auth(cfg).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "auth service stopped");
    }
    telemetry.shutdown();
    result
}
