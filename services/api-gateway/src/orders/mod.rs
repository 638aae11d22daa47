//! The orders area: `/api/v1/orders`.
//!
//! # Layout
//! - [`handlers`]: the five endpoints, thin over `keel_commerce` (domain,
//!   queries, idempotency records) and the cache.
//! - [`cache`]: the read-through cache for `GET /orders/{id}` (in-process →
//!   Redis → PostgreSQL) and its hit/miss metrics.
//! - [`invalidation`]: the Redis pub/sub subscriber that evicts in-process
//!   entries written through other instances.
//! - [`OrderChanges`]: other services' changes (`order.*` events, heard by
//!   `events::subscription`) refresh Redis and evict from memory.
//! - [`error`]: [`error::OrdersError`], the area's answers as problems.
//! - [`settings`]: the `[orders]` configuration section.
//!
//! Design and trade-offs: `docs/adr/0009-orders-cache-and-idempotency.md`.

pub mod cache;
pub mod error;
pub mod group_commit;
pub mod handlers;
pub mod invalidation;
pub mod settings;

use std::time::Duration;

use actix_web::web;
use keel_cache::{Redis, RedisSettings};
use keel_db::Pool;
use keel_http::Problem;
use keel_outbox::RelayWaker;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::orders::cache::{CacheMetrics, OrderCache};
use crate::orders::group_commit::OrderCommits;
use crate::orders::invalidation::Subscriber;
use crate::orders::settings::OrdersSettings;

/// What the handlers share (cheap to clone).
#[derive(Debug, Clone)]
pub struct Orders {
    pool: Pool,
    cache: OrderCache,
    idempotency_ttl: Duration,
    /// Raises this process's outbox relay after an order commits (its
    /// `order.created` row carries no NOTIFY; ADR 0027).
    waker: RelayWaker,
    /// Orders without an `Idempotency-Key` commit through it, several to a
    /// statement under load.
    commits: OrderCommits,
}

/// The area, built at start-up: its state for the routes, and the
/// invalidation subscriber to spawn on the main runtime.
#[derive(Debug)]
pub struct OrdersArea {
    pub state: Orders,
    pub subscriber: Subscriber,
}

impl OrdersArea {
    /// `waker`: the in-process relay's (`keel_outbox::Relay::waker`), as
    /// the webhook capture uses.
    pub fn build(
        pool: Pool,
        waker: RelayWaker,
        redis: Redis,
        redis_settings: &RedisSettings,
        settings: &OrdersSettings,
        registry: &mut Registry,
    ) -> Result<Self, keel_cache::Error> {
        let cache = OrderCache::new(redis, settings, CacheMetrics::register(registry));
        let subscriber = Subscriber::new(redis_settings, cache.clone())?;
        let commits = OrderCommits::start(pool.clone(), settings.group_commit);
        Ok(Self {
            state: Orders {
                pool,
                cache,
                idempotency_ttl: settings.idempotency_ttl,
                waker,
                commits,
            },
            subscriber,
        })
    }
}

impl Orders {
    /// True while this instance hears cache invalidations (its in-process
    /// cache is in use only then).
    pub fn cache_is_live(&self) -> bool {
        self.cache.is_live()
    }

    /// Orders waiting for the group commit right now.
    pub fn orders_waiting(&self) -> usize {
        self.commits.waiting()
    }

    /// The handle through which this instance's event subscription reports
    /// other services' order changes. Once taken, the in-process cache is
    /// used only while those events are consumed
    /// ([`OrderChanges::listening`]).
    pub fn order_changes(&self) -> OrderChanges {
        self.cache.set_events_live(false);
        OrderChanges {
            cache: self.cache.clone(),
            pool: self.pool.clone(),
        }
    }

    /// The area's background work until `shutdown`: the cache's
    /// invalidation subscriber, and pruning of expired idempotency keys.
    /// Spawn it on the main runtime (actix workers come and go).
    pub async fn run_background(self, subscriber: Subscriber, shutdown: CancellationToken) {
        tokio::join!(
            subscriber.run(shutdown.clone()),
            prune_idempotency_keys(self.pool, shutdown)
        );
    }
}

/// Where `order.*` events land: the gateway owns its cache, so it is told
/// of the worker's changes by the events those changes publish (ADR 0009),
/// not by the worker writing into it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrderChanges {
    cache: OrderCache,
    pool: Pool,
}

impl OrderChanges {
    /// The event queue is consumed (`true`) or not (`false`): an instance
    /// that cannot hear changes must not serve from memory.
    pub fn listening(&self, live: bool) {
        self.cache.set_events_live(live);
    }

    /// Order `id` changed (an `order.*` event). Returns at once: the
    /// refresh runs on its own task, so the subscription never waits.
    pub fn changed(&self, id: Uuid) {
        let this = self.clone();
        tokio::spawn(async move { this.cache.changed_elsewhere(&this.pool, id).await });
    }
}

/// How often expired `Idempotency-Key` records are deleted, and how many
/// per statement.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 1000;

async fn prune_idempotency_keys(pool: Pool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        loop {
            let pruned = match pool.get().await {
                Ok(client) => {
                    keel_commerce::orders::idempotency::prune_expired(&client, PRUNE_BATCH).await
                }
                Err(e) => Err(keel_db::Error::from(e).into()),
            };
            match pruned {
                Ok(n) if n == PRUNE_BATCH as u64 && !shutdown.is_cancelled() => continue,
                Ok(n) => {
                    tracing::debug!(pruned = n, "expired idempotency keys pruned");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning idempotency keys failed; retrying later");
                    break;
                }
            }
        }
    }
}

/// Mounts `/orders` and `/orders/{id}` inside the caller's `/api/v1` scope.
/// Every route needs a [`crate::identity::Caller`] (the authentication
/// middleware's job); other methods get a 405 problem.
pub fn configure(cfg: &mut web::ServiceConfig, orders: Orders) {
    cfg.app_data(web::Data::new(orders))
        .service(
            web::resource("/orders")
                .route(web::post().to(handlers::create))
                .route(web::get().to(handlers::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/orders/{id}")
                .route(web::get().to(handlers::get))
                .route(web::patch().to(handlers::update))
                .route(web::delete().to(handlers::cancel))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
