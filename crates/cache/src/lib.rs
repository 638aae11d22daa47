//! Redis access shared by the services.
//!
//! # Layout
//! - [`settings`]: the `redis` configuration section.
//! - [`Redis`]: a lazily connected, self-healing handle. The first use
//!   connects; after that redis-rs's `ConnectionManager` reconnects by itself.
//!   A service therefore starts while Redis is down and reports it on
//!   `/readyz` until it is back, instead of crash-looping.
//! - Keys are namespaced by [`Redis::key`] so deployments (and parallel
//!   tests) sharing one server never collide.

pub mod settings;

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

pub use settings::RedisSettings;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis URL is invalid: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("redis is unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
    #[error("connecting to redis was abandoned: {0}")]
    Abandoned(#[source] tokio::task::JoinError),
    #[error("redis command failed: {0}")]
    Command(#[from] redis::RedisError),
}

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    config: ConnectionManagerConfig,
    prefix: Arc<str>,
    manager: Arc<Mutex<Option<ConnectionManager>>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Validates the URL; connects on first use. Call inside the process's
    /// main Tokio runtime, which will own the connection.
    pub fn new(settings: &RedisSettings) -> Result<Self> {
        let client =
            redis::Client::open(settings.url.expose_secret()).map_err(Error::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            // Reconnect attempts inside one command stay short: a caller
            // (often an HTTP request) would rather fail fast and retry.
            .set_number_of_retries(2)
            .set_max_delay(settings.connect_timeout);
        Ok(Self {
            client,
            config,
            prefix: Arc::from(settings.key_prefix.as_str()),
            manager: Arc::new(Mutex::new(None)),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// A multiplexed connection (cheap to clone, safe to share).
    pub async fn connection(&self) -> Result<ConnectionManager> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        // The manager's driver task lives on the runtime that creates it.
        // Callers may be on a short-lived runtime (an actix worker); create
        // it on the runtime that built this handle, which lives as long as
        // the process.
        let (client, config) = (self.client.clone(), self.config.clone());
        let manager = self
            .runtime
            .spawn(async move { ConnectionManager::new_with_config(client, config).await })
            .await
            .map_err(Error::Abandoned)?
            .map_err(Error::Unavailable)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// `prefix + name`: every key Keel writes goes through this.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A real round trip, for `/readyz`.
    pub async fn check(&self) -> Result<()> {
        let mut conn = self.connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Command(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected PING reply",
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use keel_testkit::redis::TestRedis;
    use redis::AsyncCommands;

    fn settings(url: &str, prefix: &str) -> RedisSettings {
        RedisSettings {
            url: url.to_owned().into(),
            key_prefix: prefix.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn keys_written_through_the_handle_carry_the_prefix() {
        let test = TestRedis::new();
        let redis = Redis::new(&settings(test.url(), test.prefix())).unwrap();
        redis.check().await.unwrap();

        let mut conn = redis.connection().await.unwrap();
        let key = redis.key("greeting");
        let _: () = conn.set(&key, "hello").await.unwrap();
        assert!(key.starts_with(test.prefix()));
        let value: String = conn.get(&key).await.unwrap();
        assert_eq!(value, "hello");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_not_panicked_on() {
        // Port 1 on loopback: nothing listens there.
        let redis = Redis::new(&settings("redis://127.0.0.1:1", "x:")).unwrap();
        assert!(matches!(redis.check().await, Err(Error::Unavailable(_))));
    }
}
