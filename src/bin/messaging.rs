//! The messaging service binary: configuration, telemetry, run.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    switchboard::telemetry::init("messaging");
    let cfg = switchboard::config::MessagingConfig::from_env()?;
    switchboard::startup::run_messaging(cfg).await
}
