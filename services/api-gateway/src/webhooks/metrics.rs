//! `webhooks_received{source, outcome}`: every delivery, counted once.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    received: Family<Labels, Counter>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "webhooks_received",
            "Inbound webhook deliveries by source and outcome (stored, duplicate, or the check \
             that refused them: bad_signature, stale_timestamp, missing_header, ...)",
            metrics.received.clone(),
        );
        metrics
    }

    /// `source` must be a configured source's name (never the raw path
    /// segment: unknown names would grow the label set without bound).
    pub fn count(&self, source: &str, outcome: &str) {
        self.received
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }
}
