//! The subscriber that keeps this instance's in-process order cache
//! coherent with writes made through any instance.
//!
//! It runs on the main runtime (not an actix worker's), reconnects with a
//! capped backoff, and tells the cache whether it is listening: an instance
//! that cannot hear invalidations must not serve from memory.

use std::time::Duration;

use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::orders::cache::OrderCache;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// Subscribes to the cache's channel until `shutdown`.
#[derive(Debug)]
pub struct Subscriber {
    client: redis::Client,
    cache: OrderCache,
    connect_timeout: Duration,
}

impl Subscriber {
    pub fn new(
        settings: &keel_cache::RedisSettings,
        cache: OrderCache,
    ) -> Result<Self, keel_cache::Error> {
        let client = redis::Client::open(settings.url.expose_secret())
            .map_err(keel_cache::Error::InvalidUrl)?;
        Ok(Self {
            client,
            cache,
            connect_timeout: settings.connect_timeout,
        })
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = FIRST_RETRY;
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    delay = FIRST_RETRY;
                    // Writes made while Redis was away first, then memory.
                    self.cache.flush_pending().await;
                    self.cache.set_live(true);
                    tracing::debug!(
                        channel = self.cache.channel(),
                        "order invalidations: subscribed"
                    );
                    let mut messages = pubsub.into_on_message();
                    // Retries repairs that failed at (re)connection.
                    let mut repair = tokio::time::interval(REPAIR_INTERVAL);
                    let ended = loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break false,
                            _ = repair.tick() => {
                                if self.cache.has_pending() {
                                    self.cache.flush_pending().await;
                                }
                            }
                            message = messages.next() => match message {
                                Some(message) => {
                                    if let Ok(payload) = message.get_payload::<String>() {
                                        self.cache.on_message(&payload);
                                    }
                                }
                                None => break true,
                            },
                        }
                    };
                    self.cache.set_live(false);
                    if !ended {
                        return;
                    }
                    tracing::warn!(
                        "order invalidations: subscription lost; in-process cache off until it is back"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?delay, "order invalidations: cannot subscribe");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    async fn subscribe(&self) -> anyhow::Result<redis::aio::PubSub> {
        let mut pubsub =
            tokio::time::timeout(self.connect_timeout, self.client.get_async_pubsub()).await??;
        tokio::time::timeout(self.connect_timeout, pubsub.subscribe(self.cache.channel()))
            .await??;
        Ok(pubsub)
    }
}
