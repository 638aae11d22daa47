//! `/readyz` probes for the backing services Keel uses. Each is a real
//! round trip through the same client the service uses for work, so a
//! green check means requests can succeed.
//!
//! Which dependency makes a pod unready (ADR 0021): only PostgreSQL, which
//! every request of every service needs. RabbitMQ never does: producers
//! write to the outbox (PostgreSQL) and the relay publishes when the broker
//! is back; consumers simply wait. Redis never does either: the gateway's
//! rate limiter and order cache fail open, and auth still serves its JWK
//! Set and token verification (only login and refresh need Redis, and
//! they answer 503 themselves). Both are still probed and reported as
//! `degraded` in `/readyz` and in `keel_dependency_up`. An outage of a
//! dependency every replica shares must not unroute the whole fleet.

use std::time::Duration;

use keel_db::Pool;
use keel_http::{Check, CheckFuture, Readiness};
use keel_messaging::Broker;

/// The checks every service shares, each bounded by `timeout`: PostgreSQL
/// required, RabbitMQ reported. A service adds its own with
/// [`Readiness::with`] (required) or [`Readiness::reporting`].
pub fn readiness(timeout: Duration, pool: Pool, broker: Broker) -> Readiness {
    Readiness::new(timeout)
        .with(Postgres(pool))
        .reporting(RabbitMq(broker))
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
