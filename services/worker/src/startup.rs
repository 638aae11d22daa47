//! Wiring: from settings to a running worker.

use std::sync::Arc;

use keel_db::MigrationSet;
use keel_http::{Operational, Readiness, Routes, Server};
use keel_messaging::{Broker, Publisher};
use keel_outbox::{Relay, RelayMetrics};
use keel_runtime::{Service, checks};
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use tokio_util::sync::CancellationToken;

use crate::settings::{DEFAULTS, Settings};
use crate::{SCHEMA, SERVICE};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error(transparent)]
    Broker(#[from] keel_messaging::Error),
    #[error("cannot bind the HTTP listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The worker shares the gateway's `store` schema; both apply the same
/// sets (under the advisory lock) so either may start first.
pub fn migrations() -> [&'static MigrationSet; 3] {
    [
        &keel_outbox::MIGRATIONS,
        &keel_store::MIGRATIONS,
        &keel_webhooks::MIGRATIONS,
    ]
}

/// The worker as a [`Service`] for `keel_runtime::run`.
#[derive(Debug)]
pub struct Worker;

impl Service for Worker {
    const NAME: &'static str = SERVICE;
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = StartupError;

    fn telemetry(settings: &Settings) -> &TelemetrySettings {
        &settings.telemetry
    }

    async fn migrate(settings: &Settings) -> Result<(), StartupError> {
        keel_db::connect_and_migrate(&settings.database, SCHEMA, SERVICE, &migrations()).await?;
        Ok(())
    }

    async fn serve(
        settings: Settings,
        identity: ServiceIdentity,
        shutdown: CancellationToken,
    ) -> Result<(), StartupError> {
        let app = Application::build(settings, &identity).await?;
        tracing::info!(port = app.port(), "worker listening");
        app.run_until_stopped(shutdown).await
    }
}

/// A built, bound, not yet running worker.
pub struct Application {
    server: Server,
    settings: Settings,
    operational: Operational,
    broker: Broker,
    relay: Relay,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.server.port())
            .finish_non_exhaustive()
    }
}

impl Application {
    pub async fn build(
        settings: Settings,
        identity: &ServiceIdentity,
    ) -> Result<Self, StartupError> {
        let mut registry = keel_telemetry::metrics::registry(identity);
        let pool = keel_db::connect_and_migrate(&settings.database, SCHEMA, SERVICE, &migrations())
            .await?;
        let broker = Broker::new(settings.amqp.clone(), SERVICE);
        let relay = Relay::new(
            pool.clone(),
            keel_db::connection_config(&settings.database, SCHEMA, SERVICE)?,
            SCHEMA,
            Publisher::new(broker.clone()),
            settings.outbox.clone(),
            RelayMetrics::register(&mut registry),
        );
        let readiness = Readiness::new(settings.http.readiness_timeout)
            .with(checks::Postgres(pool))
            .with(checks::RabbitMq(broker.clone()));
        let server = Server::bind(&settings.http).map_err(StartupError::Bind)?;
        Ok(Self {
            server,
            operational: Operational::new(readiness, registry),
            settings,
            broker,
            relay,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Runs until `shutdown` is cancelled, then drains: the relay finishes
    /// its batch, the operational server stops, the broker connection closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let relay = tokio::spawn(self.relay.run(shutdown.clone()));
        let routes: Routes = Arc::new(|_cfg| {});
        let served = keel_http::serve(
            self.server,
            &self.settings.http,
            self.operational,
            routes,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        if let Err(e) = relay.await {
            tracing::error!(error = %e, "outbox relay task panicked");
        }
        self.broker.close().await;
        tracing::info!("worker stopped");
        served.map_err(StartupError::Serve)
    }
}
