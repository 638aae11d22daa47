//! Wiring: from settings to a running gateway.

use std::sync::Arc;

use keel_cache::Redis;
use keel_db::MigrationSet;
use keel_http::{Operational, Routes, Server};
use keel_messaging::{Broker, Publisher};
use keel_outbox::{Relay, RelayMetrics};
use keel_runtime::{Background, Service, checks};
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::authn::Authenticator;
use crate::edge::Edge;
use crate::edge::rate_limit::RateLimiter;
use crate::events::stream::ExportRenderer;
use crate::events::{self, EventsArea};
use crate::exports::{self, Exports};
use crate::orders::{self, OrdersArea};
use crate::proxy::Upstreams;
use crate::settings::{DEFAULTS, Settings};
use crate::webhooks::{self, Webhooks};
use crate::{SCHEMA, SERVICE};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error(transparent)]
    Redis(#[from] keel_cache::Error),
    #[error("cannot build the upstream HTTP clients: {0}")]
    Upstreams(#[source] reqwest::Error),
    #[error("invalid webhook settings: {0}")]
    Webhooks(String),
    #[error("invalid export settings: {0}")]
    Exports(String),
    #[error("invalid admin settings: {0}")]
    Admin(String),
    #[error("invalid authentication settings: {0}")]
    Authn(String),
    #[error("cannot bind the HTTP listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] keel_runtime::RunError),
}

/// Every migration set applied to the gateway's schema, in order.
pub fn migrations() -> [&'static MigrationSet; 5] {
    [
        &keel_outbox::MIGRATIONS,
        &keel_commerce::orders::MIGRATIONS,
        &keel_commerce::exports::MIGRATIONS,
        &keel_webhooks::MIGRATIONS,
        &keel_dead_letters::MIGRATIONS,
    ]
}

/// The gateway as a [`Service`] for `keel_runtime::run`.
#[derive(Debug)]
pub struct Gateway;

impl Service for Gateway {
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
        tracing::info!(port = app.port(), "gateway listening");
        app.run_until_stopped(shutdown).await
    }
}

/// A built, bound, not yet running gateway.
pub struct Application {
    server: Server,
    settings: Settings,
    operational: Operational,
    broker: Broker,
    relay: Relay,
    edge: Edge,
    upstreams: Upstreams,
    orders: OrdersArea,
    webhooks: Webhooks,
    admin: Admin,
    events: EventsArea,
    exports: Exports,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.server.port())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Migrates, prepares lazily connecting clients, registers metrics and
    /// binds the listener. Nothing serves until [`run_until_stopped`](Self::run_until_stopped).
    pub async fn build(
        settings: Settings,
        identity: &ServiceIdentity,
    ) -> Result<Self, StartupError> {
        let mut registry = keel_telemetry::metrics::registry(identity);
        let pool = keel_db::connect_and_migrate(&settings.database, SCHEMA, SERVICE, &migrations())
            .await?;
        let redis = Redis::new(&settings.redis)?;
        let broker = Broker::new(settings.amqp.clone(), SERVICE);
        let relay = Relay::new(
            pool.clone(),
            keel_db::connection_config(&settings.database, SCHEMA, SERVICE)?,
            SCHEMA,
            Publisher::new(broker.clone()),
            settings.outbox.clone(),
            RelayMetrics::register(&mut registry),
        );

        let upstreams = Upstreams::new(&settings.upstreams, settings.http.body_limit)
            .map_err(StartupError::Upstreams)?;
        let edge = Edge {
            trusted_proxies: settings.http.trusted_proxies.clone().into(),
            authenticator: Arc::new(
                Authenticator::new(
                    &settings.authn,
                    upstreams.jwks_url(),
                    upstreams.auth_client(),
                    redis.clone(),
                    &mut registry,
                )
                .map_err(StartupError::Authn)?,
            ),
            limiter: Arc::new(RateLimiter::new(
                redis.clone(),
                settings.rate_limit.clone(),
                &mut registry,
            )),
            cors: settings.cors.clone(),
        };

        let orders = OrdersArea::build(
            pool.clone(),
            relay.waker(),
            redis.clone(),
            &settings.redis,
            &settings.orders,
            &mut registry,
        )?;

        let webhooks = Webhooks::build(
            pool.clone(),
            relay.waker(),
            &settings.webhooks,
            settings.environment,
            &mut registry,
        )
        .map_err(StartupError::Webhooks)?;

        let admin = Admin::build(pool.clone(), &settings.amqp_management, &settings.amqp)
            .map_err(StartupError::Admin)?;

        let exports = Exports::build(pool.clone(), &settings.exports, settings.environment)
            .map_err(StartupError::Exports)?;

        // An event's data is the export as GET /exports/{id} shows it,
        // `download_url` included.
        let view = exports.clone();
        let mut events = EventsArea::build(
            pool.clone(),
            broker.clone(),
            &settings.events,
            ExportRenderer::new(move |export| serde_json::to_string(&view.view(export))),
            &mut registry,
        );
        // Other services' order changes reach the order cache as events on
        // this instance's queue (ADR 0009).
        events.subscription = events
            .subscription
            .with_order_changes(orders.state.order_changes());

        // Redis is reported, not required, while the rate limiter fails open
        // (the order cache and revocation lookups always do): its outage
        // then turns no request away (ADR 0021).
        let readiness = checks::readiness(settings.http.readiness_timeout, pool, broker.clone());
        let readiness = if settings.rate_limit.fail_open {
            readiness.reporting(checks::RedisCheck(redis))
        } else {
            readiness.with(checks::RedisCheck(redis))
        };
        let server = Server::bind(&settings.http).map_err(StartupError::Bind)?;
        Ok(Self {
            server,
            operational: Operational::new(readiness, registry),
            settings,
            broker,
            relay,
            edge,
            upstreams,
            orders,
            webhooks,
            admin,
            events,
            exports,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves until `shutdown` is cancelled: HTTP stops accepting and drains
    /// in-flight requests, the relay finishes its batch, then the broker
    /// connection closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let mut background = Background::new(shutdown);
        let token = background.token().clone();
        background.spawn("outbox relay", self.relay.run(token.clone()));
        // The orders area's background work (cache invalidations, key
        // pruning) lives on this, the main runtime, like the relay.
        let orders_state = self.orders.state;
        background.spawn(
            "orders background",
            orders_state
                .clone()
                .run_background(self.orders.subscriber, token.clone()),
        );
        // The events area's broker subscription lives on this runtime too
        // (lapin's I/O must outlive actix workers); its streams end when
        // `shutdown` comes, so they never hold the HTTP drain hostage.
        let events_state = self.events.state;
        background.spawn(
            "events background",
            events_state
                .clone()
                .run_background(self.events.subscription, token),
        );
        let (edge, upstreams) = (self.edge, self.upstreams);
        let webhooks_state = self.webhooks;
        let admin_state = self.admin;
        let exports_state = self.exports;
        let routes: Routes = Arc::new(move |cfg| {
            // One `/api/v1` scope: every API area mounts inside it, behind
            // the edge middleware (CORS, authentication, rate limits).
            cfg.service(edge.clone().api_scope().configure(|api| {
                crate::openapi::configure(api);
                upstreams.configure_api(api);
                orders::configure(api, orders_state.clone());
                admin::configure(api, admin_state.clone());
                events::configure(api, events_state.clone());
                exports::configure(api, exports_state.clone());
            }));
            // The JWK Set from the gateway's own copy, never proxied.
            crate::authn::configure_root(cfg, edge.authenticator.clone());
            // Outside `/api/v1`: signed by the sender, no bearer token.
            webhooks::configure(cfg, webhooks_state.clone(), &edge);
        });
        let stopped = keel_runtime::serve_until_stopped(
            self.server,
            &self.settings.http,
            self.operational,
            routes,
            background,
            &self.broker,
        )
        .await;
        tracing::info!("gateway stopped");
        Ok(stopped?)
    }
}
