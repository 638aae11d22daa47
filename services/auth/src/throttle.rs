//! Login throttling: failures counted in Redis per email and per client IP
//! over a fixed window. Past a limit, login answers 429 with `Retry-After`
//! (the window's remaining time) without even checking the password.

use std::net::IpAddr;
use std::time::Duration;

use keel_cache::Redis;
use sha2::{Digest, Sha256};

use crate::domain::Email;
use crate::settings::ThrottleSettings;

#[derive(Debug, Clone)]
pub struct Throttle {
    redis: Redis,
    settings: ThrottleSettings,
}

impl Throttle {
    pub fn new(redis: Redis, settings: ThrottleSettings) -> Self {
        Self { redis, settings }
    }

    // Emails are hashed in key names: Redis dumps should not list addresses.
    fn email_key(&self, email: &Email) -> String {
        let digest = Sha256::digest(email.as_str().as_bytes());
        self.redis
            .key(&format!("auth:throttle:email:{}", hex(&digest[..16])))
    }

    fn ip_key(&self, ip: Option<IpAddr>) -> Option<String> {
        ip.map(|ip| self.redis.key(&format!("auth:throttle:ip:{ip}")))
    }

    /// `Some(wait)` when either counter is at its limit.
    pub async fn blocked(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<Option<Duration>, keel_cache::Error> {
        let mut conn = self.redis.connection().await?;
        let mut keys = vec![(self.email_key(email), self.settings.max_failures_per_email)];
        if let Some(key) = self.ip_key(ip) {
            keys.push((key, self.settings.max_failures_per_ip));
        }
        let mut wait: Option<Duration> = None;
        for (key, limit) in keys {
            let (count, ttl): (Option<u32>, i64) = redis::pipe()
                .get(&key)
                .pttl(&key)
                .query_async(&mut conn)
                .await?;
            if count.unwrap_or(0) >= limit {
                let remaining = Duration::from_millis(u64::try_from(ttl.max(1000)).unwrap_or(1000));
                wait = Some(wait.map_or(remaining, |w| w.max(remaining)));
            }
        }
        Ok(wait)
    }

    /// Counts one failure for both keys; the window starts at the first.
    pub async fn record_failure(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<(), keel_cache::Error> {
        let mut conn = self.redis.connection().await?;
        let window = i64::try_from(self.settings.window.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for key in std::iter::once(self.email_key(email)).chain(self.ip_key(ip)) {
            pipe.incr(&key, 1).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(window).arg("NX").ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// A success forgets the email's failures (not the IP's: one good
    /// account must not reset a credential-stuffing source).
    pub async fn reset(&self, email: &Email) -> Result<(), keel_cache::Error> {
        let mut conn = self.redis.connection().await?;
        let () = redis::cmd("DEL")
            .arg(self.email_key(email))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
