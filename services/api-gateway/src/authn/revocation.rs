//! The check that a token's session is still alive (on by default).
//!
//! Access tokens would otherwise outlive a logout by up to their lifetime.
//! The auth service keeps each live session as a Redis hash
//! `auth:session:{sid}` and deletes it on logout, logout-all, password
//! change and refresh-token reuse (ADR 0008), so a token whose session key
//! is gone is refused. The answer is cached for `cache_ttl` (5 s), so the
//! check costs one Redis round trip per session per interval, not per
//! request, and a revocation takes effect within `cache_ttl`.
//!
//! Redis down or slower than 250 ms → the token is accepted (fail open),
//! logged and counted in `authn_revocation_lookup_failures`; that answer is
//! cached like any other, so an outage costs each session one slow lookup
//! per `cache_ttl`, not one per request. Revocation narrows a window; the
//! signature and the token's short lifetime remain the gate.

use std::time::Duration;

use keel_cache::Redis;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::authn::RevocationSettings;

/// Cached answers are bounded; a session id costs ~40 bytes.
const CAPACITY: u64 = 100_000;
/// A lookup slower than this is abandoned (fail open).
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

pub struct Revocation {
    redis: Redis,
    key: String,
    answers: Cache<Uuid, bool>,
    failures: Counter,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    pub fn new(redis: Redis, settings: &RevocationSettings, registry: &mut Registry) -> Self {
        let failures = Counter::default();
        registry.register(
            "authn_revocation_lookup_failures",
            "Session revocation lookups that failed or timed out (the token was accepted: fail open)",
            failures.clone(),
        );
        Self {
            redis,
            key: settings.key.clone(),
            answers: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(settings.cache_ttl)
                .build(),
            failures,
        }
    }

    pub async fn is_revoked(&self, sid: Uuid) -> bool {
        if let Some(answer) = self.answers.get(&sid) {
            return answer;
        }
        let key = self.redis.key(&self.key.replace("{sid}", &sid.to_string()));
        let lookup = async {
            let mut conn = self.redis.connection().await?;
            let found: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            Ok::<_, keel_cache::Error>(found == 0)
        };
        let revoked = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(revoked)) => revoked,
            Ok(Err(e)) => {
                self.failures.inc();
                tracing::warn!(error = %e, "session revocation lookup failed; accepting the token");
                false
            }
            Err(_) => {
                self.failures.inc();
                tracing::warn!("session revocation lookup timed out; accepting the token");
                false
            }
        };
        // A failed lookup's "alive" is kept too: during an outage each
        // session pays one slow lookup per interval, not one per request.
        self.answers.insert(sid, revoked);
        revoked
    }
}
