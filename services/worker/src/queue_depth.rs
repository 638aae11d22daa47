//! `keel_queue_messages{queue}` and `keel_queue_consumers{queue}`: how many
//! jobs wait in each queue this worker drains (and how many consumers
//! share it), sampled with a passive declare — the broker's own count of
//! ready messages, without the management plugin. What autoscaling on
//! queue depth reads.

use std::time::Duration;

use keel_messaging::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How often the depths are sampled.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Debug, Clone, Default)]
pub struct QueueDepth {
    messages: Family<QueueLabels, Gauge>,
    consumers: Family<QueueLabels, Gauge>,
}

impl QueueDepth {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "queue_messages",
            "Messages ready in a queue this process consumes (sampled)",
            metrics.messages.clone(),
        );
        registry.register(
            "queue_consumers",
            "Consumers of a queue this process consumes (sampled)",
            metrics.consumers.clone(),
        );
        metrics
    }

    /// Samples `queues` every [`INTERVAL`] until `shutdown`.
    pub async fn run(self, broker: Broker, queues: Vec<String>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sample(&broker, &queues).await {
                tracing::debug!(error = %e, "sampling queue depths failed");
            }
        }
    }

    async fn sample(&self, broker: &Broker, queues: &[String]) -> keel_messaging::Result<()> {
        let channel = broker.channel().await?;
        for queue in queues {
            let declared = channel
                .queue_declare(
                    ShortString::from(queue.as_str()),
                    QueueDeclareOptions {
                        // Passive: only ask; never create or change it.
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(keel_messaging::Error::from)?;
            let labels = QueueLabels {
                queue: queue.clone(),
            };
            self.messages
                .get_or_create(&labels)
                .set(i64::from(declared.message_count()));
            self.consumers
                .get_or_create(&labels)
                .set(i64::from(declared.consumer_count()));
        }
        let _ = channel.close(200, ShortString::from("sampled")).await;
        Ok(())
    }
}
