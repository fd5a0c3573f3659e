//! The auth service binary: configuration, telemetry, run.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    switchboard::telemetry::init("auth");
    let cfg = switchboard::config::AuthConfig::from_env()?;
    switchboard::startup::run_auth(cfg).await
}
