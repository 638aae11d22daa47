//! The `[orders]` configuration section.

use std::time::Duration;

use keel_config::{Invalid, Validate};
use serde::Deserialize;

use crate::orders::group_commit::GroupCommitOptions;

#[derive(Debug, Clone, Deserialize)]
pub struct OrdersSettings {
    /// Orders kept in each instance's in-process cache.
    pub local_cache_capacity: u64,
    /// Lifetime of an in-process entry: a bound on staleness should an
    /// invalidation message ever be lost.
    #[serde(with = "humantime_serde")]
    pub local_cache_ttl: Duration,
    /// Lifetime of an order cached in Redis.
    #[serde(with = "humantime_serde")]
    pub redis_cache_ttl: Duration,
    /// How long the first response to an `Idempotency-Key` is replayed.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How orders without an `Idempotency-Key` share commits
    /// (`[orders.group_commit]`).
    #[serde(default)]
    pub group_commit: GroupCommitOptions,
}

impl Validate for OrdersSettings {
    fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within("orders"));
        if self.local_cache_capacity == 0 {
            return invalid("local_cache_capacity", "must be at least 1");
        }
        for (key, value) in [
            ("local_cache_ttl", self.local_cache_ttl),
            ("redis_cache_ttl", self.redis_cache_ttl),
            ("idempotency_ttl", self.idempotency_ttl),
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        let group_commit = &self.group_commit;
        if group_commit.max_batch == 0
            || group_commit.concurrent_batches == 0
            || group_commit.max_waiting == 0
        {
            return invalid(
                "group_commit",
                "max_batch, concurrent_batches and max_waiting must be at least 1",
            );
        }
        if group_commit.commit_timeout.is_zero() {
            return invalid("group_commit.commit_timeout", "must be greater than zero");
        }
        if self.local_cache_ttl > self.redis_cache_ttl {
            return invalid("local_cache_ttl", "must not exceed orders.redis_cache_ttl");
        }
        Ok(())
    }
}
