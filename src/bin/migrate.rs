//! One-shot migrations for deployments (docker-compose's `migrate` service; in Kubernetes,
//! by hand ahead of a rollout if wanted): applies the auth schema's migrations as
//! `AUTH_DATABASE_URL`'s role and the messaging schema's as `MESSAGING_DATABASE_URL`'s,
//! under the same advisory locks the services take, then exits. The services also migrate
//! at start, so this is for ordering rollouts, not a requirement.

use switchboard::platform::{config, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cfg: config::MigrateConfig = config::parse();
    let telemetry = telemetry::init("migrate", &cfg.logs);
    let result = switchboard::startup::migrate_all(&cfg).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "migrations failed");
    }
    telemetry.shutdown();
    result
}
