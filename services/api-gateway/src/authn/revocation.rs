//! Optional check that a token's session is still alive.
//!
//! Access tokens outlive a logout by up to their lifetime; deployments that
//! cannot accept that turn this on. The auth service keeps each live session
//! as a Redis hash `auth:session:{sid}` and deletes it on logout, logout-all,
//! password change and refresh-token reuse (ADR 0008), so a token whose
//! session key is gone is refused. The answer is cached for `cache_ttl`, so
//! the check costs one Redis round trip per session per interval, not per
//! request. Redis down → the token is accepted (logged): revocation narrows
//! a window, it is not the only gate.

use std::time::Duration;

use keel_cache::Redis;
use moka::sync::Cache;
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
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    pub fn new(redis: Redis, settings: &RevocationSettings) -> Self {
        Self {
            redis,
            key: settings.key.clone(),
            answers: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(settings.cache_ttl)
                .build(),
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
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(revoked)) => {
                self.answers.insert(sid, revoked);
                revoked
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "session revocation lookup failed; accepting the token");
                false
            }
            Err(_) => {
                tracing::warn!("session revocation lookup timed out; accepting the token");
                false
            }
        }
    }
}
