//! `/readyz` probes for the backing services Keel uses. Each is a real
//! round trip through the same client the service uses for work, so a
//! green check means requests can succeed.

use std::time::Duration;

use keel_db::Pool;
use keel_http::{Check, CheckFuture, Readiness};
use keel_messaging::Broker;

/// The checks every service shares (PostgreSQL, RabbitMQ), each bounded by
/// `timeout`; a service adds its own with [`Readiness::with`].
pub fn readiness(timeout: Duration, pool: Pool, broker: Broker) -> Readiness {
    Readiness::new(timeout)
        .with(Postgres(pool))
        .with(RabbitMq(broker))
}

#[derive(Debug)]
pub struct Postgres(pub Pool);

impl Check for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move { keel_db::check(&self.0).await.map_err(|e| e.to_string()) })
    }
}

/// Redis (feature `redis`).
#[cfg(feature = "redis")]
#[derive(Debug)]
pub struct RedisCheck(pub keel_cache::Redis);

#[cfg(feature = "redis")]
impl Check for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move { self.0.check().await.map_err(|e| e.to_string()) })
    }
}

#[derive(Debug)]
pub struct RabbitMq(pub Broker);

impl Check for RabbitMq {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move { self.0.check().await.map_err(|e| e.to_string()) })
    }
}
