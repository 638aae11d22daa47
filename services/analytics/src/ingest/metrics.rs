//! Ingestion metrics: events stored, batch sizes and latency, lag.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What became of an event taken off the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Fate {
    /// Stored and counted.
    Inserted,
    /// Already stored (a redelivery): ignored.
    Duplicate,
    /// Older than the raw retention: not stored.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FateLabels {
    outcome: Fate,
}

/// Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    events: Family<FateLabels, Counter>,
    batch_size: Histogram,
    batch_seconds: Histogram,
    lag_seconds: Gauge<f64, AtomicU64>,
}

impl IngestMetrics {
    /// Registers `analytics_events_ingested`, `analytics_batch_size`,
    /// `analytics_batch_duration_seconds` and `analytics_lag_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "analytics_events_ingested",
            "Events taken off the queue, by outcome (inserted, duplicate, expired)",
            metrics.events.clone(),
        );
        registry.register(
            "analytics_batch_size",
            "Events per stored batch",
            metrics.batch_size.clone(),
        );
        registry.register(
            "analytics_batch_duration_seconds",
            "Time to store a batch and update its rollups (one transaction)",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "analytics_lag_seconds",
            "Now minus the newest occurred_at of the last stored batch",
            metrics.lag_seconds.clone(),
        );
        metrics
    }

    /// Metrics reported nowhere (commands that do not serve /metrics).
    pub fn unregistered() -> Self {
        Self {
            events: Family::default(),
            // 1 .. 16384 events.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            // 1 ms .. ~16 s.
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            lag_seconds: Gauge::default(),
        }
    }

    pub fn events(&self, outcome: Fate, count: usize) {
        self.events
            .get_or_create(&FateLabels { outcome })
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub fn batch(&self, size: usize, seconds: f64) {
        // Precision loss only past 2^52 events in one batch.
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.observe(size as f64);
        self.batch_seconds.observe(seconds);
    }

    pub fn lag(&self, seconds: f64) {
        self.lag_seconds.set(seconds);
    }

    /// Events of `outcome` so far (tests, diagnostics).
    pub fn ingested(&self, outcome: Fate) -> u64 {
        self.events
            .get(&FateLabels { outcome })
            .map_or(0, |c| c.get())
    }
}
