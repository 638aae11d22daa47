//! The read-through order cache: in-process (bounded, short TTL) in front
//! of Redis (TTL) in front of PostgreSQL.
//!
//! Orders are cached whole, whoever asked: the handler checks the caller
//! against the cached `user_id` on every hit, so a cache never widens access.
//!
//! Freshness rules (see ADR 0009):
//! - Writers call [`OrderCache::written`] after commit. It *writes through*
//!   to Redis with the order's version (`updated_at` in µs, which strictly
//!   increases per change); Redis keeps the higher version, so a reader
//!   filling Redis with a row it read just before the commit cannot bury
//!   the newer one.
//! - Each write is announced on a Redis pub/sub channel; every instance
//!   evicts its in-process entry, bumps a generation counter and
//!   acknowledges on the same channel. The writer answers its client only
//!   once every other subscribed instance has acknowledged (or after
//!   [`ACK_TIMEOUT`]), so the client's next read, wherever it lands, cannot
//!   be served the old version from memory. A fill that started before an
//!   invalidation is dropped rather than stored (the counter changed under
//!   it).
//! - While an instance is not subscribed (start-up, Redis outage) it cannot
//!   hear invalidations, so it neither reads nor fills its in-process cache.
//! - Other services' writes (the worker applying webhooks) reach the cache
//!   as `order.*` events on this instance's own broker queue
//!   ([`OrderChanges`](crate::orders::OrderChanges)): the order is read again from PostgreSQL, written
//!   through to Redis if newer, and evicted from memory. While that queue
//!   is not consumed the in-process cache is off too, as for the Redis
//!   subscription.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use actix_web::web::Bytes;
use keel_cache::Redis;
use keel_commerce::orders::domain::{Order, Scope};
use keel_db::Pool;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::orders::settings::OrdersSettings;

/// An order with its serialized body and strong ETag, computed once per
/// version and shared by every request that hits it.
#[derive(Debug)]
pub struct CachedOrder {
    pub order: Order,
    pub body: Bytes,
    pub etag: String,
}

impl CachedOrder {
    pub fn new(order: Order) -> Result<Self, serde_json::Error> {
        let body = Bytes::from(serde_json::to_vec(&order)?);
        Ok(Self {
            etag: etag(&body),
            order,
            body,
        })
    }

    fn from_body(body: Bytes) -> Result<Self, serde_json::Error> {
        Ok(Self {
            order: serde_json::from_slice(&body)?,
            etag: etag(&body),
            body,
        })
    }

    /// The version Redis compares: `updated_at` in microseconds.
    fn version(&self) -> i64 {
        self.order.updated_at.timestamp_micros()
    }
}

/// A strong ETag: the first 128 bits of the body's SHA-256, quoted.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// Stores `ARGV[2]` under `KEYS[1]` unless the stored version is newer or
/// equal: fills and write-throughs race safely.
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

/// How long a write waits for the other instances to acknowledge its
/// invalidation. A hung instance costs writers this much, not forever; its
/// entries still expire with `orders.local_cache_ttl`.
const ACK_TIMEOUT: Duration = Duration::from_millis(250);

/// A write's broadcast waiting for acknowledgements.
#[derive(Debug)]
struct Waiter {
    acked: usize,
    /// Known once `PUBLISH` has said how many subscribers received it.
    expected: Option<usize>,
    done: Option<oneshot::Sender<()>>,
}

/// Lookups by level and result.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    local_hit: Counter,
    local_miss: Counter,
    redis_hit: Counter,
    redis_miss: Counter,
    redis_error: Counter,
}

impl CacheMetrics {
    /// Registers `keel_orders_cache_lookups_total{level, result}`.
    pub fn register(registry: &mut Registry) -> Self {
        let family = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        let counter = |level, result| {
            family
                .get_or_create(&vec![("level", level), ("result", result)])
                .clone()
        };
        let metrics = Self {
            local_hit: counter("local", "hit"),
            local_miss: counter("local", "miss"),
            redis_hit: counter("redis", "hit"),
            redis_miss: counter("redis", "miss"),
            redis_error: counter("redis", "error"),
        };
        registry.register(
            "orders_cache_lookups",
            "Order cache lookups by level (local, redis) and result (hit, miss, error)",
            family,
        );
        metrics
    }
}

#[derive(Clone)]
pub struct OrderCache {
    inner: Arc<Inner>,
}

struct Inner {
    local: Cache<Uuid, Arc<CachedOrder>>,
    /// Bumped by every invalidation; see the module documentation.
    generation: AtomicU64,
    /// Serialises "check generation, then insert" against "bump, then evict".
    fill_lock: Mutex<()>,
    /// True while the in-process level may be used: both
    /// `invalidations_live` and `events_live`.
    live: AtomicBool,
    /// True while the Redis invalidation subscription is up.
    invalidations_live: AtomicBool,
    /// True while `order.*` events are consumed, or while nothing was asked
    /// to deliver them (no [`OrderChanges`](crate::orders::OrderChanges)
    /// handle was taken).
    events_live: AtomicBool,
    /// Orders written while Redis was unreachable from here: Redis may hold
    /// an older version and other instances were not told. Reads here skip
    /// Redis for them; the subscriber repairs them when Redis is back.
    pending: Mutex<HashSet<Uuid>>,
    /// `!pending.is_empty()`, readable without the lock on the hot path.
    any_pending: AtomicBool,
    /// Broadcasts of this instance's writes waiting for other instances'
    /// acknowledgements, by nonce.
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_nonce: AtomicU64,
    redis: Redis,
    redis_ttl: Duration,
    channel: String,
    /// Tells this instance's own invalidations apart from other instances'.
    instance: Uuid,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("channel", &self.inner.channel)
            .field("live", &self.inner.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a lookup could not be answered.
pub type LookupError = keel_commerce::orders::Error;

impl OrderCache {
    pub fn new(redis: Redis, settings: &OrdersSettings, metrics: CacheMetrics) -> Self {
        let local = Cache::builder()
            .max_capacity(settings.local_cache_capacity)
            .time_to_live(settings.local_cache_ttl)
            .build();
        Self {
            inner: Arc::new(Inner {
                local,
                generation: AtomicU64::new(0),
                fill_lock: Mutex::new(()),
                live: AtomicBool::new(false),
                invalidations_live: AtomicBool::new(false),
                events_live: AtomicBool::new(true),
                pending: Mutex::new(HashSet::new()),
                any_pending: AtomicBool::new(false),
                waiters: Mutex::new(HashMap::new()),
                next_nonce: AtomicU64::new(0),
                channel: redis.key("orders:invalidate"),
                redis,
                redis_ttl: settings.redis_cache_ttl,
                instance: Uuid::new_v4(),
                metrics,
            }),
        }
    }

    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Acquire)
    }

    /// The pub/sub channel invalidations travel on (namespaced like keys).
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    fn redis_key(&self, id: Uuid) -> String {
        self.inner.redis.key(&format!("order:{id}"))
    }

    /// The order, from the nearest level that has it; `None` if it does not
    /// exist. Authorization is the caller's job.
    pub async fn get(
        &self,
        pool: &Pool,
        id: Uuid,
    ) -> Result<Option<Arc<CachedOrder>>, LookupError> {
        let inner = &self.inner;
        let live = inner.live.load(Ordering::Acquire);
        if live {
            if let Some(hit) = inner.local.get(&id) {
                inner.metrics.local_hit.inc();
                return Ok(Some(hit));
            }
            inner.metrics.local_miss.inc();
        }
        let generation = inner.generation.load(Ordering::Acquire);
        let redis_suspect = self.is_pending(id);

        let from_redis = if redis_suspect {
            Ok(None)
        } else {
            self.redis_get(id).await
        };
        match from_redis {
            Ok(Some(hit)) => {
                inner.metrics.redis_hit.inc();
                let hit = Arc::new(hit);
                self.fill_local(generation, &hit);
                return Ok(Some(hit));
            }
            Ok(None) => {
                inner.metrics.redis_miss.inc();
            }
            Err(e) => {
                // Degrade to the database rather than fail the read.
                inner.metrics.redis_error.inc();
                tracing::warn!(error = %e, "order cache: Redis read failed");
            }
        }

        let client = pool.get().await.map_err(keel_db::Error::from)?;
        let order = match keel_commerce::orders::get(&client, id, Scope::All).await {
            Ok(order) => order,
            Err(keel_commerce::orders::Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        drop(client);
        let cached = Arc::new(
            CachedOrder::new(order)
                .map_err(|e| keel_commerce::orders::Error::Corrupt(e.to_string()))?,
        );
        if !redis_suspect && let Err(e) = self.redis_set(&cached).await {
            inner.metrics.redis_error.inc();
            tracing::warn!(error = %e, "order cache: Redis fill failed");
        }
        self.fill_local(generation, &cached);
        Ok(Some(cached))
    }

    /// After a committed write: Redis gets the new version, this instance's
    /// entry is replaced, and every other instance is told to evict its own.
    /// Failures are logged, not returned: the write has committed, and the
    /// TTLs bound how long a missed invalidation can matter.
    pub async fn written(&self, order: &Order) -> Option<Arc<CachedOrder>> {
        let inner = &self.inner;
        let cached = match CachedOrder::new(order.clone()) {
            Ok(cached) => Arc::new(cached),
            Err(e) => {
                tracing::error!(error = %e, "order cache: cannot serialise an order");
                self.evict_local(order.id);
                return None;
            }
        };
        let mut reached_redis = true;
        if let Err(e) = self.redis_set(&cached).await {
            inner.metrics.redis_error.inc();
            reached_redis = false;
            tracing::warn!(error = %e, order_id = %order.id, "order cache: Redis write-through failed");
        }
        {
            let _guard = inner.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
            inner.generation.fetch_add(1, Ordering::AcqRel);
            if inner.live.load(Ordering::Acquire) {
                inner.local.insert(order.id, cached.clone());
            }
        }
        if reached_redis && let Err(e) = self.broadcast_and_wait(order.id).await {
            inner.metrics.redis_error.inc();
            reached_redis = false;
            tracing::warn!(error = %e, order_id = %order.id, "order cache: invalidation broadcast failed");
        }
        if !reached_redis {
            self.lock_pending().insert(order.id);
            inner.any_pending.store(true, Ordering::Release);
        }
        Some(cached)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether some write still has to be repaired in Redis.
    pub fn has_pending(&self) -> bool {
        self.inner.any_pending.load(Ordering::Acquire)
    }

    fn is_pending(&self, id: Uuid) -> bool {
        self.inner.any_pending.load(Ordering::Acquire) && self.lock_pending().contains(&id)
    }

    /// Repairs what writes could not tell Redis: deletes each pending
    /// order's Redis entry and broadcasts its invalidation. Ids that still
    /// fail stay pending for the next attempt. Called by the subscriber
    /// when it (re)connects, before the in-process cache goes live.
    pub async fn flush_pending(&self) {
        let ids: Vec<Uuid> = self.lock_pending().iter().copied().collect();
        for id in ids {
            match self.forget_in_redis(id).await {
                Ok(()) => {
                    let mut pending = self.lock_pending();
                    pending.remove(&id);
                    if pending.is_empty() {
                        self.inner.any_pending.store(false, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, order_id = %id, "order cache: repair after a Redis outage failed");
                    return;
                }
            }
        }
    }

    async fn forget_in_redis(&self, id: Uuid) -> Result<(), anyhow::Error> {
        let mut conn = self.inner.redis.connection().await?;
        let _deleted: i64 = redis::cmd("DEL")
            .arg(self.redis_key(id))
            .query_async(&mut conn)
            .await?;
        self.broadcast_and_wait(id).await
    }

    /// Handles a message from the invalidation channel:
    /// - `inv:<writer>:<nonce>:<order id>`: evict, then acknowledge to the
    ///   writer (our own writes are already applied locally);
    /// - `ack:<writer>:<nonce>`: another instance evicted one of our writes.
    pub fn on_message(&self, payload: &str) {
        let mut parts = payload.splitn(4, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("inv"), Some(writer), Some(nonce), Some(id)) => {
                if writer == self.inner.instance.to_string() {
                    return;
                }
                if let Ok(id) = id.parse() {
                    self.evict_local(id);
                }
                let ack = format!("ack:{writer}:{nonce}");
                let cache = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.publish(ack).await {
                        tracing::debug!(error = %e, "order cache: cannot acknowledge an invalidation");
                    }
                });
            }
            (Some("ack"), Some(writer), Some(nonce), None) => {
                if writer != self.inner.instance.to_string() {
                    return;
                }
                if let Ok(nonce) = nonce.parse() {
                    self.acknowledged(nonce);
                }
            }
            _ => {}
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acknowledged(&self, nonce: u64) {
        let mut waiters = self.lock_waiters();
        if let Some(waiter) = waiters.get_mut(&nonce) {
            waiter.acked += 1;
            if waiter.expected.is_some_and(|n| waiter.acked >= n) {
                if let Some(done) = waiter.done.take() {
                    let _ = done.send(());
                }
                waiters.remove(&nonce);
            }
        }
    }

    /// Publishes the invalidation of `id` and waits (at most
    /// [`ACK_TIMEOUT`]) until every other subscribed instance has evicted
    /// it, so the writer's response is sent only when no instance can
    /// serve the old version from memory any more.
    async fn broadcast_and_wait(&self, id: Uuid) -> Result<(), anyhow::Error> {
        let inner = &self.inner;
        let nonce = inner.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (done, acked) = oneshot::channel();
        self.lock_waiters().insert(
            nonce,
            Waiter {
                acked: 0,
                expected: None,
                done: Some(done),
            },
        );
        let message = format!("inv:{}:{nonce}:{id}", inner.instance);
        let receivers = match self.publish(message).await {
            Ok(n) => n,
            Err(e) => {
                self.lock_waiters().remove(&nonce);
                return Err(e);
            }
        };
        // Our own subscription received it too (and will not answer).
        let own = usize::from(inner.invalidations_live.load(Ordering::Acquire));
        let expected = usize::try_from(receivers).unwrap_or(0).saturating_sub(own);
        {
            let mut waiters = self.lock_waiters();
            match waiters.get_mut(&nonce) {
                Some(waiter) if waiter.acked < expected => waiter.expected = Some(expected),
                _ => {
                    waiters.remove(&nonce);
                    return Ok(());
                }
            }
        }
        if tokio::time::timeout(ACK_TIMEOUT, acked).await.is_err() {
            self.lock_waiters().remove(&nonce);
            tracing::warn!(order_id = %id, expected, "order cache: not every instance acknowledged an invalidation in time");
        }
        Ok(())
    }

    /// The invalidation subscription is up (`true`) or lost (`false`).
    /// Either way the in-process entries may have missed invalidations:
    /// drop them all.
    pub fn set_live(&self, live: bool) {
        self.set_listening(&self.inner.invalidations_live, live);
    }

    /// The `order.*` event queue is consumed (`true`) or not (`false`); as
    /// [`set_live`](Self::set_live).
    pub fn set_events_live(&self, live: bool) {
        self.set_listening(&self.inner.events_live, live);
    }

    fn set_listening(&self, flag: &AtomicBool, live: bool) {
        let inner = &self.inner;
        let _guard = inner.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        inner.generation.fetch_add(1, Ordering::AcqRel);
        flag.store(live, Ordering::Release);
        let both = inner.invalidations_live.load(Ordering::Acquire)
            && inner.events_live.load(Ordering::Acquire);
        inner.live.store(both, Ordering::Release);
        inner.local.invalidate_all();
    }

    /// Another service changed order `id` (an `order.*` event). Redis gets
    /// the version PostgreSQL holds now, unless it holds a newer one, then
    /// this instance forgets its in-process entry; in that order, so a
    /// read in between cannot refill memory from an older Redis entry
    /// (and a fill already under way is dropped by the generation bump).
    /// Reading PostgreSQL rather than trusting the event makes late and
    /// repeated events harmless: whatever arrives, the newest version
    /// wins. Failures are logged: the TTLs bound what a missed event costs.
    pub async fn changed_elsewhere(&self, pool: &Pool, id: Uuid) {
        if let Err(e) = self.refresh_redis(pool, id).await {
            self.inner.metrics.redis_error.inc();
            tracing::warn!(error = %e, order_id = %id, "order cache: refresh after an order event failed");
            // Reads here skip Redis for it until the subscriber repairs it.
            self.lock_pending().insert(id);
            self.inner.any_pending.store(true, Ordering::Release);
        }
        self.evict_local(id);
    }

    async fn refresh_redis(&self, pool: &Pool, id: Uuid) -> Result<(), anyhow::Error> {
        let client = pool.get().await.map_err(keel_db::Error::from)?;
        let order = match keel_commerce::orders::get(&client, id, Scope::All).await {
            Ok(order) => order,
            Err(keel_commerce::orders::Error::NotFound) => {
                drop(client);
                let mut conn = self.inner.redis.connection().await?;
                let _deleted: i64 = redis::cmd("DEL")
                    .arg(self.redis_key(id))
                    .query_async(&mut conn)
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        drop(client);
        self.redis_set(&CachedOrder::new(order)?).await
    }

    fn evict_local(&self, id: Uuid) {
        let inner = &self.inner;
        let _guard = inner.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        inner.generation.fetch_add(1, Ordering::AcqRel);
        inner.local.invalidate(&id);
    }

    fn fill_local(&self, generation: u64, cached: &Arc<CachedOrder>) {
        let inner = &self.inner;
        let _guard = inner.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        if inner.live.load(Ordering::Acquire)
            && inner.generation.load(Ordering::Acquire) == generation
        {
            inner.local.insert(cached.order.id, cached.clone());
        }
    }

    async fn redis_get(&self, id: Uuid) -> Result<Option<CachedOrder>, anyhow::Error> {
        let mut conn = self.inner.redis.connection().await?;
        let body: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.redis_key(id))
            .arg("b")
            .query_async(&mut conn)
            .await?;
        Ok(match body {
            Some(body) => Some(CachedOrder::from_body(Bytes::from(body))?),
            None => None,
        })
    }

    async fn redis_set(&self, cached: &CachedOrder) -> Result<(), anyhow::Error> {
        let mut conn = self.inner.redis.connection().await?;
        let ttl_ms = u64::try_from(self.inner.redis_ttl.as_millis()).unwrap_or(u64::MAX);
        let _stored: i64 = SET_IF_NEWER
            .key(self.redis_key(cached.order.id))
            .arg(cached.version())
            .arg(cached.body.as_ref())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Publishes on the invalidation channel; returns how many subscribers
    /// received the message.
    async fn publish(&self, message: String) -> Result<i64, anyhow::Error> {
        let mut conn = self.inner.redis.connection().await?;
        Ok(redis::cmd("PUBLISH")
            .arg(&self.inner.channel)
            .arg(message)
            .query_async(&mut conn)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_is_a_quoted_strong_validator() {
        let tag = etag(b"{}");
        assert_eq!(tag.len(), 34);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        assert_ne!(tag, etag(b"{ }"));
    }
}
