//! Wiring: from settings to a running worker.

use std::sync::Arc;

use keel_contracts::jobs::JobQueue;
use keel_db::MigrationSet;
use keel_dead_letters::{Archiver, ArchiverMetrics};
use keel_http::{Operational, Routes, Server};
use keel_messaging::{Broker, Consumer, ConsumerMetrics, ConsumerOptions, Publisher};
use keel_outbox::{Relay, RelayMetrics};
use keel_runtime::{Background, Service, checks};
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use tokio_util::sync::CancellationToken;

use crate::exports::Exports;
use crate::queue_depth::QueueDepth;
use crate::settings::{ConsumerSettings, DEFAULTS, Settings};
use crate::webhooks::shopify::ShopifyApi;
use crate::webhooks::{WebhookHandler, WebhookMetrics};
use crate::{SCHEMA, SERVICE};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error(transparent)]
    Broker(#[from] keel_messaging::Error),
    #[error("cannot build the Shopify API client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot open the export storage: {0}")]
    Storage(#[from] keel_files::Error),
    #[error("cannot bind the HTTP listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] keel_runtime::RunError),
}

/// The worker shares the gateway's `store` schema; both apply the same
/// sets (under the advisory lock) so either may start first.
pub fn migrations() -> [&'static MigrationSet; 5] {
    [
        &keel_outbox::MIGRATIONS,
        &keel_commerce::orders::MIGRATIONS,
        &keel_webhooks::MIGRATIONS,
        &keel_dead_letters::MIGRATIONS,
        &keel_commerce::exports::MIGRATIONS,
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
    /// Drains `{ns}.dead` into `dead_letters` (the admin API lists them).
    archiver: Archiver,
    /// The job consumers, by task name; each runs until shutdown, then
    /// drains.
    consumers: Vec<(&'static str, ConsumerTask)>,
    exports: Exports,
    queue_depth: QueueDepth,
}

/// A consumer, type-erased so consumers of different handlers sit in one
/// list.
type ConsumerTask =
    Box<dyn FnOnce(CancellationToken) -> futures::future::BoxFuture<'static, ()> + Send>;

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
        let consumer_metrics = ConsumerMetrics::register(&mut registry);

        // jobs.webhook
        let webhooks = WebhookHandler::new(
            pool.clone(),
            relay.waker(),
            &settings.webhooks,
            ShopifyApi::from_settings(&settings.shopify)?,
            settings.amqp.retry.max_attempts(),
            WebhookMetrics::register(&mut registry),
        );
        let webhook_queue = broker.topology().job_queue(JobQueue::Webhook);
        let mut consumers = vec![(
            "webhook consumer",
            consumer_task(webhook_consumer(
                Consumer::new(
                    broker.clone(),
                    webhook_queue,
                    webhooks,
                    consumer_options(&settings.jobs.webhook, &settings, "worker-webhook"),
                    consumer_metrics.clone(),
                ),
                &settings.jobs.webhook,
            )),
        )];

        // jobs.export, and the retention sweep of export files
        let exports = Exports::build(pool.clone(), &settings.exports)?;
        let export_jobs = ConsumerSettings {
            prefetch: settings.exports.prefetch,
            concurrency: settings.exports.concurrency,
            // An export is minutes of work of its own: nothing to batch.
            batch_size: 1,
            batch_wait: std::time::Duration::ZERO,
            batches_in_flight: 1,
        };
        consumers.push((
            "export consumer",
            consumer_task(Consumer::new(
                broker.clone(),
                broker.topology().job_queue(JobQueue::Export),
                exports.handler(settings.amqp.retry.max_attempts()),
                consumer_options(&export_jobs, &settings, "worker-export"),
                consumer_metrics.clone(),
            )),
        ));

        let archiver = Archiver::new(
            broker.clone(),
            pool.clone(),
            ArchiverMetrics::register(&mut registry),
        );

        let queue_depth = QueueDepth::register(&mut registry);
        let readiness = checks::readiness(settings.http.readiness_timeout, pool, broker.clone());
        let server = Server::bind(&settings.http).map_err(StartupError::Bind)?;
        Ok(Self {
            server,
            operational: Operational::new(readiness, registry),
            settings,
            broker,
            relay,
            archiver,
            consumers,
            exports,
            queue_depth,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Runs until `shutdown` is cancelled, then drains: consumers stop
    /// taking jobs and let in-flight ones finish (within
    /// `http.shutdown_grace`; the rest return to their queue), the relay
    /// finishes its batch, the operational server stops, the broker
    /// connection closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let mut background = Background::new(shutdown);
        let token = background.token().clone();
        background.spawn("outbox relay", self.relay.run(token.clone()));
        background.spawn("dead-letter archiver", self.archiver.run(token.clone()));
        for (name, consumer) in self.consumers {
            background.spawn(name, consumer(token.clone()));
        }
        background.spawn(
            "export retention",
            self.exports.run_retention(token.clone()),
        );
        let queues = JobQueue::ALL
            .iter()
            .map(|queue| self.broker.topology().job_queue(*queue).name)
            .collect();
        background.spawn(
            "queue depth sampler",
            self.queue_depth.run(self.broker.clone(), queues, token),
        );
        let routes: Routes = Arc::new(|_cfg| {});
        let stopped = keel_runtime::serve_until_stopped(
            self.server,
            &self.settings.http,
            self.operational,
            routes,
            background,
            &self.broker,
        )
        .await;
        tracing::info!("worker stopped");
        Ok(stopped?)
    }
}

/// How a consumer of `jobs` runs: its section's prefetch and concurrency,
/// and the HTTP shutdown grace for its in-flight jobs.
fn consumer_options(jobs: &ConsumerSettings, settings: &Settings, tag: &str) -> ConsumerOptions {
    ConsumerOptions {
        prefetch: jobs.prefetch,
        concurrency: jobs.concurrency,
        grace_period: settings.http.shutdown_grace,
        consumer_tag: tag.to_owned(),
    }
}

/// The webhook consumer in batch mode when `[jobs.webhook] batch_size` asks
/// for it (ADR 0026).
fn webhook_consumer<H: keel_messaging::Handler>(
    consumer: Consumer<H>,
    jobs: &ConsumerSettings,
) -> Consumer<H> {
    match jobs.batches() {
        Some(batches) => consumer.with_batches(batches),
        None => consumer,
    }
}

fn consumer_task<H: keel_messaging::Handler>(consumer: Consumer<H>) -> ConsumerTask {
    Box::new(move |shutdown| {
        Box::pin(async move {
            if let Err(e) = consumer.run(shutdown).await {
                tracing::error!(error = %e, "consumer stopped with an error");
            }
        })
    })
}
