//! `webhooks_received{source, outcome}`: every delivery, counted once;
//! `webhooks_capture_waiting`: captures queued for a group commit right
//! now (read at each scrape), the figure to alert on before `max_waiting`
//! turns deliveries away.

use keel_webhooks::group_commit::WaitingProbe;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// `webhooks_capture_waiting`, read from the queue at each scrape.
#[derive(Debug)]
struct CaptureQueue(WaitingProbe);

impl Collector for CaptureQueue {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let waiting = ConstGauge::new(i64::try_from(self.0.waiting()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "webhooks_capture_waiting",
            "Webhook captures waiting for a group commit (refused with 503 past \
             webhooks.group_commit.max_waiting)",
            None,
            waiting.metric_type(),
        )?;
        waiting.encode(metric)
    }
}

/// Registers `webhooks_capture_waiting` for `captures`.
pub fn register_capture_queue(registry: &mut Registry, captures: WaitingProbe) {
    registry.register_collector(Box::new(CaptureQueue(captures)));
}
