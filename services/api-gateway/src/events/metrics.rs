//! `events_streams_open` (gauge), `events_delivered_total{event}`,
//! `events_streams_closed_lagging_total`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct EventsMetrics {
    open: Gauge,
    delivered: Family<Labels, Counter>,
    lagging: Counter,
}

impl EventsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "events_streams_open",
            "Server-Sent Events streams (GET /api/v1/events) open on this instance",
            metrics.open.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to Server-Sent Events streams, by event type (replayed ones included)",
            metrics.delivered.clone(),
        );
        registry.register(
            "events_streams_closed_lagging",
            "Streams closed because their client fell too far behind (it resumes with Last-Event-ID)",
            metrics.lagging.clone(),
        );
        metrics
    }

    pub fn stream_opened(&self) {
        self.open.inc();
    }

    pub fn stream_closed(&self) {
        self.open.dec();
    }

    /// `event` is one of the fixed event names (a bounded label set).
    pub fn delivered(&self, event: &'static str) {
        self.delivered.get_or_create(&vec![("event", event)]).inc();
    }

    pub fn closed_lagging(&self) {
        self.lagging.inc();
    }
}
