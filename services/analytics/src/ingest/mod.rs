//! Event ingestion: batches off `{ns}.events.analytics` into raw rows and
//! rollups.
//!
//! - [`event`]: the envelope as analytics reads it, and what one event adds
//!   to which rollup series (counts, revenue, users).
//! - [`store`]: the batch transaction and `rebuild`.
//! - [`handler`]: the [`keel_messaging::BatchHandler`] the consumer runs.
//! - [`metrics`]: events ingested, batch sizes and latency, lag.
//! - [`maintenance`]: partitions created ahead and dropped past retention.

pub mod event;
pub mod handler;
pub mod maintenance;
pub mod metrics;
pub mod store;

pub use handler::IngestHandler;
pub use metrics::IngestMetrics;

/// The consumer name: the queue is `{ns}.events.analytics`.
pub const CONSUMER: &str = "analytics";
