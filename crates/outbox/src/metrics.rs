//! Relay metrics, registered into the service's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    published: Counter,
    failures: Counter,
    backlog: Gauge,
}

impl RelayMetrics {
    /// Creates the metrics and registers them under `keel_outbox_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "outbox_published",
            "Outbox rows published and confirmed by the broker",
            metrics.published.clone(),
        );
        registry.register(
            "outbox_publish_failures",
            "Outbox rows whose publish failed (they are retried)",
            metrics.failures.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox rows not yet published",
            metrics.backlog.clone(),
        );
        metrics
    }

    pub(crate) fn published(&self, count: usize) {
        self.published
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub(crate) fn failed(&self, count: usize) {
        self.failures
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub(crate) fn set_backlog(&self, rows: i64) {
        self.backlog.set(rows);
    }

    /// Rows published so far.
    pub fn published_total(&self) -> u64 {
        self.published.get()
    }

    /// Failed publishes so far.
    pub fn failures_total(&self) -> u64 {
        self.failures.get()
    }

    /// The backlog at the last check.
    pub fn backlog(&self) -> i64 {
        self.backlog.get()
    }
}
