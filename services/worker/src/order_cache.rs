//! Telling the gateway's order cache about orders the worker changed.
//!
//! The gateway reads `GET /orders/{id}` through an in-process cache and
//! Redis (`services/api-gateway/src/orders/cache.rs`, ADR 0009). Its own
//! writes keep both fresh; the worker's writes (webhooks) must too, or an
//! instance would serve the order as it was before the webhook for up to
//! the cache's TTLs. After its transaction commits, the worker does what
//! a gateway write does, in the same wire format:
//!
//! 1. writes the new version through to Redis (`{prefix}order:{id}`, hash
//!    `v` = `updated_at` in µs, `b` = the order's JSON) *only if newer* than
//!    what is there — so a gateway fill that read the row just before the
//!    commit cannot bury it, and this cannot bury a later write;
//! 2. publishes `inv:<writer>:<nonce>:<id>` on `{prefix}orders:invalidate`:
//!    every gateway instance evicts its in-process entry.
//!
//! The worker does not wait for the instances' acknowledgements: no client
//! is waiting on this write. If Redis is unreachable the change shows once
//! the entries expire (`orders.local_cache_ttl`, `orders.redis_cache_ttl`
//! of the gateway); a warning is logged. The format is pinned by a test on
//! each side (`tests/order_cache.rs` here, `tests/api/cache.rs` there).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel_cache::Redis;
use keel_store::domain::Order;
use uuid::Uuid;

/// The gateway's `SET_IF_NEWER`, verbatim: store unless the stored version
/// is newer or equal.
static SET_IF_NEWER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Writes orders through to the gateway's cache and broadcasts their
/// invalidation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrderCacheNotifier {
    redis: Redis,
    /// How long the written entry lives in Redis (the gateway's
    /// `orders.redis_cache_ttl`).
    ttl: Duration,
    writer: String,
    nonce: std::sync::Arc<AtomicU64>,
}

impl OrderCacheNotifier {
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            writer: format!("worker-{}", Uuid::new_v4()),
            nonce: std::sync::Arc::default(),
        }
    }

    /// The Redis key of an order's entry.
    pub fn key(&self, id: Uuid) -> String {
        self.redis.key(&format!("order:{id}"))
    }

    /// The channel gateway instances listen on.
    pub fn channel(&self) -> String {
        self.redis.key("orders:invalidate")
    }

    /// After a committed change to `order`. Never fails: see the module
    /// documentation for what a Redis outage costs.
    pub async fn written(&self, order: &Order) {
        if let Err(e) = self.try_written(order).await {
            tracing::warn!(
                error = %e, order_id = %order.id,
                "could not update the gateway's order cache; it catches up when its entries expire"
            );
        }
    }

    async fn try_written(&self, order: &Order) -> Result<(), anyhow::Error> {
        let body = serde_json::to_vec(order)?;
        let mut conn = self.redis.connection().await?;
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let _stored: i64 = SET_IF_NEWER
            .key(self.key(order.id))
            .arg(order.updated_at.timestamp_micros())
            .arg(body)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed);
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(format!("inv:{}:{nonce}:{}", self.writer, order.id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
