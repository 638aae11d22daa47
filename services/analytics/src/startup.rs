//! Wiring: from settings to a running analytics service.

use std::sync::Arc;

use keel_db::{MigrationSet, Pool};
use keel_http::{Operational, Routes, Server};
use keel_messaging::{BatchConsumer, BatchOptions, Broker, ConsumerMetrics, QueueSpec};
use keel_runtime::{Background, Service, checks};
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use tokio_util::sync::CancellationToken;

use crate::ingest::{self, IngestHandler, IngestMetrics};
use crate::query::routes::{self, QueryState};
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
    #[error(transparent)]
    Run(#[from] keel_runtime::RunError),
    #[error("cannot build the JWK Set client: {0}")]
    JwksClient(#[source] reqwest::Error),
}

/// The analytics schema: the service's own tables, and the outbox
/// component's (kept for the shared `migrate` contract).
pub fn migrations() -> [&'static MigrationSet; 2] {
    [&keel_outbox::MIGRATIONS, &crate::schema::MIGRATIONS]
}

/// Connects to the analytics database and applies pending migrations (the
/// subcommands use it too).
pub async fn connect(settings: &Settings) -> Result<Pool, StartupError> {
    Ok(keel_db::connect_and_migrate(&settings.database, SCHEMA, SERVICE, &migrations()).await?)
}

/// The analytics service as a [`Service`] for `keel_runtime::run`.
#[derive(Debug)]
pub struct Analytics;

impl Service for Analytics {
    const NAME: &'static str = SERVICE;
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = StartupError;

    fn telemetry(settings: &Settings) -> &TelemetrySettings {
        &settings.telemetry
    }

    async fn migrate(settings: &Settings) -> Result<(), StartupError> {
        connect(settings).await?;
        Ok(())
    }

    async fn serve(
        settings: Settings,
        identity: ServiceIdentity,
        shutdown: CancellationToken,
    ) -> Result<(), StartupError> {
        let app = Application::build(settings, &identity).await?;
        tracing::info!(port = app.port(), "analytics listening");
        app.run_until_stopped(shutdown).await
    }
}

/// A built, bound, not yet running analytics service.
pub struct Application {
    server: Server,
    settings: Settings,
    operational: Operational,
    broker: Broker,
    pool: Pool,
    consumer_metrics: ConsumerMetrics,
    ingest_metrics: IngestMetrics,
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
        let consumer_metrics = ConsumerMetrics::register(&mut registry);
        let ingest_metrics = IngestMetrics::register(&mut registry);
        let pool = connect(&settings).await?;
        let broker = Broker::new(settings.amqp.clone(), SERVICE);
        let readiness = checks::readiness(
            settings.http.readiness_timeout,
            pool.clone(),
            broker.clone(),
        );
        let server = Server::bind(&settings.http).map_err(StartupError::Bind)?;
        Ok(Self {
            server,
            operational: Operational::new(readiness, registry),
            settings,
            broker,
            pool,
            consumer_metrics,
            ingest_metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Runs until `shutdown` is cancelled, then drains: the consumer
    /// finishes the batch in hand, in-flight requests finish, the broker
    /// connection closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let jwks = routes::remote_jwks(&self.settings.authn).map_err(StartupError::JwksClient)?;
        let mut background = Background::new(shutdown);
        background.spawn(
            "event consumer",
            consume(
                self.broker.clone(),
                self.pool.clone(),
                self.settings.clone(),
                self.consumer_metrics.clone(),
                self.ingest_metrics.clone(),
                background.token().clone(),
            ),
        );
        background.spawn(
            "partition maintenance",
            ingest::maintenance::run(
                self.pool.clone(),
                self.settings.retention.clone(),
                background.token().clone(),
            ),
        );
        let state = QueryState {
            pool: self.pool.clone(),
            limits: self.settings.query.clone(),
            jwks: Arc::new(jwks),
        };
        let routes: Routes = Arc::new(move |cfg| routes::configure(cfg, state.clone()));
        let stopped = keel_runtime::serve_until_stopped(
            self.server,
            &self.settings.http,
            self.operational,
            routes,
            background,
            &self.broker,
        )
        .await;
        tracing::info!("analytics stopped");
        Ok(stopped?)
    }
}

/// Declares `{ns}.events.analytics` bound to every event (`#`), waiting for
/// the broker as long as it takes; `None` once `shutdown` is cancelled.
pub async fn declare_queue(broker: &Broker, shutdown: &CancellationToken) -> Option<QueueSpec> {
    let mut failures = 0;
    loop {
        let channel = broker.channel_with_retry(shutdown).await?;
        match broker
            .topology()
            .declare_event_queue(&channel, ingest::CONSUMER, &["#"])
            .await
        {
            Ok(spec) => return Some(spec),
            Err(error) => {
                failures += 1;
                let delay = broker.settings().reconnect.delay(failures);
                tracing::warn!(error = %error, ?delay, "cannot declare the analytics queue; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The batch consumers of domain events (`ingest.consumers` of them, each
/// on its own channel), until `shutdown`.
///
/// Several consumers per process because a batch's time is split between
/// work (CPU in this process and in PostgreSQL) and waiting for its commit
/// to reach the disk; with one consumer the next batch only starts after
/// the flush. Concurrent batches stay correct: each is one transaction,
/// idempotent on the raw key, and writes rollup and `daily_users` rows in
/// key order, so two batches never wait on each other in a cycle.
pub async fn consume(
    broker: Broker,
    pool: Pool,
    settings: Settings,
    consumer_metrics: ConsumerMetrics,
    ingest_metrics: IngestMetrics,
    shutdown: CancellationToken,
) {
    let Some(queue) = declare_queue(&broker, &shutdown).await else {
        return;
    };
    let options = BatchOptions {
        max_size: settings.ingest.batch_size,
        max_wait: settings.ingest.batch_wait,
        prefetch: settings.ingest.prefetch,
        consumer_tag: SERVICE.to_owned(),
    };
    let consumers = (0..settings.ingest.consumers.max(1)).map(|_| {
        let handler = IngestHandler::new(
            pool.clone(),
            ingest_metrics.clone(),
            settings.retention.raw_days,
        );
        let consumer = BatchConsumer::new(
            broker.clone(),
            queue.clone(),
            handler,
            options.clone(),
            consumer_metrics.clone(),
        );
        let shutdown = shutdown.clone();
        async move {
            if let Err(error) = consumer.run(shutdown).await {
                tracing::error!(error = %error, "an event consumer stopped with an error");
            }
        }
    });
    futures::future::join_all(consumers).await;
}
