//! Archiver metrics, registered into the worker's Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::archive::Archived;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct ArchiverMetrics {
    archived: Family<OutcomeLabel, Counter>,
    failures: Counter,
}

impl ArchiverMetrics {
    /// Creates the metrics and registers them under `keel_dead_letters_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "dead_letters_archived",
            "Dead messages taken off the dead queue, by outcome (stored, died_again, duplicate)",
            metrics.archived.clone(),
        );
        registry.register(
            "dead_letters_archive_failures",
            "Attempts to store a dead message that failed (it stays in the queue and is retried)",
            metrics.failures.clone(),
        );
        metrics
    }

    pub(crate) fn archived(&self, outcome: Archived) {
        self.archived
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    /// Dead messages archived so far with `outcome`.
    pub fn archived_total(&self, outcome: Archived) -> u64 {
        self.archived
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Failed store attempts so far.
    pub fn failures_total(&self) -> u64 {
        self.failures.get()
    }
}
