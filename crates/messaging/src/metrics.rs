//! Consumer metrics, registered into the service's Prometheus registry.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Outcome {
    /// Handled and acknowledged.
    Ok,
    /// Failed transiently and sent to a delay queue.
    Retried,
    /// Sent to the dead-letter queue.
    Dead,
    /// Could be neither retried nor dead-lettered (broker trouble): returned
    /// to its queue.
    Requeued,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    queue: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Counters of the consumer runner. Cheap to clone (shared handles); one
/// per process, shared by all its consumers.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    handled: Family<OutcomeLabels, Counter>,
    duration: Family<QueueLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<QueueLabels, Gauge>,
    /// Handler runs that found a dependency unavailable: the message (or
    /// batch) was held, not retried nor requeued.
    held: Family<QueueLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            handled: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            in_flight: Family::default(),
            held: Family::default(),
        }
    }
}

impl ConsumerMetrics {
    /// Creates the metrics and registers them under `keel_messages_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "messages_handled",
            "Messages taken from a queue, by queue and outcome",
            metrics.handled.clone(),
        );
        registry.register(
            "message_handler_duration_seconds",
            "Time spent in message handlers",
            metrics.duration.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Messages being handled right now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "messages_held",
            "Handler runs that found a dependency (PostgreSQL) unavailable; the message was kept in hand without counting a delivery",
            metrics.held.clone(),
        );
        metrics
    }

    pub(crate) fn outcome(&self, queue: &str, outcome: Outcome) {
        self.handled
            .get_or_create(&OutcomeLabels {
                queue: queue.to_owned(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn observe_duration(&self, queue: &str, seconds: f64) {
        self.duration
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .observe(seconds);
    }

    pub(crate) fn in_flight(&self, queue: &str, delta: i64) {
        self.in_flight
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .inc_by(delta);
    }

    pub(crate) fn held(&self, queue: &str) {
        self.held
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .inc();
    }

    /// Handler runs on `queue` that found a dependency unavailable so far.
    pub fn held_total(&self, queue: &str) -> u64 {
        self.held
            .get(&QueueLabels {
                queue: queue.to_owned(),
            })
            .map_or(0, |counter| counter.get())
    }

    /// Messages of `queue` that ended with `outcome` so far (for tests and
    /// diagnostics).
    pub fn handled(&self, queue: &str, outcome: Outcome) -> u64 {
        self.handled
            .get(&OutcomeLabels {
                queue: queue.to_owned(),
                outcome,
            })
            .map_or(0, |counter| counter.get())
    }
}
