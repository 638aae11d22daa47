//! Wiring: from settings to a running auth service.

use std::sync::Arc;

use keel_cache::Redis;
use keel_db::MigrationSet;
use keel_http::{Operational, Routes, Server};
use keel_messaging::{Broker, Publisher};
use keel_outbox::{Relay, RelayMetrics};
use keel_runtime::{Background, Service, checks};
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use tokio_util::sync::CancellationToken;

use crate::passwords::Hasher;
use crate::sessions::Sessions;
use crate::settings::{DEFAULTS, Settings};
use crate::state::AppState;
use crate::throttle::Throttle;
use crate::users::Users;
use crate::{SCHEMA, SERVICE};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error(transparent)]
    Redis(#[from] keel_cache::Error),
    #[error("cannot bind the HTTP listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] keel_runtime::RunError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error("cannot prepare password hashing: {0}")]
    Hasher(#[from] crate::passwords::HashError),
    #[error("cannot bootstrap the admin account: {0}")]
    Bootstrap(#[from] crate::admin::AdminError),
}

/// Every migration set applied to the auth's schema, in order.
pub fn migrations() -> [&'static MigrationSet; 2] {
    [&keel_outbox::MIGRATIONS, &crate::schema::MIGRATIONS]
}

/// The auth service as a [`Service`] for `keel_runtime::run`.
#[derive(Debug)]
pub struct AuthService;

impl Service for AuthService {
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
        tracing::info!(port = app.port(), "auth listening");
        app.run_until_stopped(shutdown).await
    }
}

/// A built, bound, not yet running auth service.
pub struct Application {
    server: Server,
    settings: Settings,
    operational: Operational,
    broker: Broker,
    relay: Relay,
    state: AppState,
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
        let state = build_state(&settings, pool.clone(), redis.clone())?;
        bootstrap_admin(&state).await?;
        let broker = Broker::new(settings.amqp.clone(), SERVICE);
        let relay = Relay::new(
            pool.clone(),
            keel_db::connection_config(&settings.database, SCHEMA, SERVICE)?,
            SCHEMA,
            Publisher::new(broker.clone()),
            settings.outbox.clone(),
            RelayMetrics::register(&mut registry),
        );

        // Redis is reported, not required: login and refresh answer 503
        // without it, but the JWK Set every verifier fetches, registration
        // and the account routes still serve (ADR 0021).
        let readiness = checks::readiness(settings.http.readiness_timeout, pool, broker.clone())
            .reporting(checks::RedisCheck(redis));
        let server = Server::bind(&settings.http).map_err(StartupError::Bind)?;
        Ok(Self {
            server,
            operational: Operational::new(readiness, registry),
            settings,
            broker,
            relay,
            state,
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
        background.spawn("outbox relay", self.relay.run(background.token().clone()));
        let data = actix_web::web::Data::new(self.state);
        let routes: Routes = Arc::new(move |cfg| {
            cfg.app_data(data.clone());
            crate::routes::config(cfg);
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
        tracing::info!("auth stopped");
        Ok(stopped?)
    }
}

/// Everything the handlers share, from settings and the two clients.
pub fn build_state(
    settings: &Settings,
    pool: keel_db::Pool,
    redis: Redis,
) -> Result<AppState, StartupError> {
    let signer = crate::keys::load(&settings.tokens, settings.environment)?;
    let verifier = signer.verifier(
        &settings.tokens.issuer,
        &settings.tokens.audience,
        settings.tokens.leeway,
    );
    Ok(AppState {
        users: Users::new(pool),
        hasher: Hasher::new(&settings.passwords)?,
        sessions: Sessions::new(redis.clone(), settings.sessions.clone()),
        throttle: Throttle::new(redis, settings.throttle.clone()),
        signer: Arc::new(signer),
        verifier: Arc::new(verifier),
        tokens: settings.tokens.clone(),
        trusted_proxies: settings.http.trusted_proxies.clone(),
    })
}

/// Creates the admin named by `KEEL_BOOTSTRAP_ADMIN_EMAIL` and
/// `KEEL_BOOTSTRAP_ADMIN_PASSWORD` when both are set (idempotent), or
/// promotes the existing account when that password is its own.
async fn bootstrap_admin(state: &AppState) -> Result<(), StartupError> {
    let (Ok(email), Ok(password)) = (
        std::env::var("KEEL_BOOTSTRAP_ADMIN_EMAIL"),
        std::env::var("KEEL_BOOTSTRAP_ADMIN_PASSWORD"),
    ) else {
        return Ok(());
    };
    // An account that exists with another password stops the start: the
    // runtime logs the one-line reason and exits 1.
    let outcome =
        crate::admin::ensure_admin(&state.users, &state.hasher, &email, &password).await?;
    tracing::info!(?outcome, "bootstrap admin ensured");
    Ok(())
}

/// The `create-admin` subcommand: migrate, then ensure the admin exists.
pub async fn create_admin(
    settings: &Settings,
    email: &str,
    password: &str,
) -> Result<crate::admin::Outcome, StartupError> {
    let pool =
        keel_db::connect_and_migrate(&settings.database, SCHEMA, SERVICE, &migrations()).await?;
    let hasher = Hasher::new(&settings.passwords)?;
    Ok(crate::admin::ensure_admin(&Users::new(pool), &hasher, email, password).await?)
}
