//! Relay metrics, registered into the service's Prometheus registry.
//!
//! The gauges are measured by each relay every `outbox.measure_interval`
//! over the whole schema, so every replica reports the same figures: alert
//! on their `max`, not their sum (`k8s/alerts/outbox.yaml`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::relay::Backlog;

/// Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    published: Counter,
    failures: Counter,
    parked_total: Counter,
    backlog_rows: Gauge,
    parked_rows: Gauge,
    oldest_unpublished_seconds: Gauge<f64, AtomicU64>,
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
            "outbox_parked",
            "Outbox rows this relay parked after the broker kept refusing them",
            metrics.parked_total.clone(),
        );
        registry.register(
            "outbox_backlog_rows",
            "Outbox rows not yet published and not parked (the relay still tries them)",
            metrics.backlog_rows.clone(),
        );
        registry.register(
            "outbox_parked_rows",
            "Outbox rows parked: unpublished, skipped by the relay until unparked",
            metrics.parked_rows.clone(),
        );
        registry.register(
            "outbox_oldest_unpublished_seconds",
            "Age of the oldest unpublished, unparked outbox row (0 when none)",
            metrics.oldest_unpublished_seconds.clone(),
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

    pub(crate) fn parked(&self, count: usize) {
        self.parked_total
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub(crate) fn set_backlog(&self, backlog: &Backlog) {
        self.backlog_rows.set(backlog.rows);
        self.parked_rows.set(backlog.parked);
        self.oldest_unpublished_seconds.set(backlog.oldest_seconds);
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
        self.backlog_rows.get()
    }

    /// Parked rows at the last check.
    pub fn parked_rows(&self) -> i64 {
        self.parked_rows.get()
    }

    /// Age of the oldest unpublished row at the last check.
    pub fn oldest_unpublished_seconds(&self) -> f64 {
        self.oldest_unpublished_seconds.get()
    }
}
