use keel_cache::RedisSettings;
use keel_config::{Environment, Invalid, Validate};
use keel_db::DatabaseSettings;
use keel_http::HttpSettings;
use keel_messaging::AmqpSettings;
use keel_outbox::RelayOptions;
use keel_telemetry::TelemetrySettings;
use serde::Deserialize;

use crate::admin::settings::AmqpManagementSettings;
use crate::authn::AuthnSettings;
use crate::edge::cors::CorsSettings;
use crate::edge::rate_limit::RateLimitSettings;
use crate::events::settings::EventsSettings;
use crate::exports::settings::ExportsSettings;
use crate::orders::settings::OrdersSettings;
use crate::proxy::UpstreamSettings;
use crate::webhooks::settings::WebhooksSettings;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub amqp: AmqpSettings,
    /// The RabbitMQ management API (`GET /api/v1/admin/queues`).
    #[serde(default)]
    pub amqp_management: AmqpManagementSettings,
    #[serde(default)]
    pub outbox: RelayOptions,
    pub telemetry: TelemetrySettings,
    /// The services behind the proxy (auth, analytics).
    pub upstreams: UpstreamSettings,
    pub authn: AuthnSettings,
    pub cors: CorsSettings,
    pub rate_limit: RateLimitSettings,
    /// The orders area: cache sizes and lifetimes, idempotency window.
    pub orders: OrdersSettings,
    /// Inbound webhook sources: scheme, secrets, tolerance, body limit.
    pub webhooks: WebhooksSettings,
    /// `GET /api/v1/events`: heartbeats, reconnect hint, per-user cap.
    pub events: EventsSettings,
    /// Exports: active limit, signed download links, file storage.
    pub exports: ExportsSettings,
}

impl Settings {
    /// The built-in defaults alone (tests start from these).
    pub fn defaults() -> Result<Self, keel_config::Error> {
        keel_config::load_from(DEFAULTS, None, Default::default())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate()?;
        self.database.validate()?;
        self.redis.validate()?;
        keel_config::Validate::validate(&self.amqp)?;
        self.amqp_management.validate()?;
        self.telemetry.validate()?;
        self.upstreams.validate()?;
        self.authn.validate()?;
        self.authn
            .validate_against_forwarders(&self.http.trusted_proxies)?;
        self.cors.validate()?;
        self.rate_limit.validate()?;
        self.orders.validate()?;
        self.events.validate()?;
        self.webhooks
            .validate_in(self.environment, |name| std::env::var(name).ok())?;
        self.exports.validate_in(self.environment)?;
        // Inner deadlines end first, so a client gets the answer that names
        // what was slow (the capture's 503, the upstream's 504) rather than
        // the request deadline's.
        let request_timeout = self.http.request_timeout;
        if self.webhooks.group_commit.capture_timeout >= request_timeout {
            return Err(Invalid::new(
                "group_commit.capture_timeout",
                "must be less than http.request_timeout",
            )
            .within("webhooks"));
        }
        if self.upstreams.request_timeout >= request_timeout {
            return Err(
                Invalid::new("request_timeout", "must be less than http.request_timeout")
                    .within("upstreams"),
            );
        }
        Ok(())
    }
}
