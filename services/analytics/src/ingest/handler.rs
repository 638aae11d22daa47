//! The batch handler the event consumer runs: decode, keep partitions
//! ready, store the batch, report.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use keel_db::Pool;
use keel_messaging::{BatchHandler, DecodeError, HandlerError, Incoming};

use super::event::RawEvent;
use super::metrics::{Fate, IngestMetrics};
use super::store;

/// Stores event batches into the analytics schema.
#[derive(Debug)]
pub struct IngestHandler {
    pool: Pool,
    metrics: IngestMetrics,
    retention_days: u32,
    /// Days whose partition is known to exist: checked once per process.
    partitions: Mutex<HashSet<NaiveDate>>,
}

impl IngestHandler {
    pub fn new(pool: Pool, metrics: IngestMetrics, retention_days: u32) -> Self {
        Self {
            pool,
            metrics,
            retention_days,
            partitions: Mutex::new(HashSet::new()),
        }
    }

    /// Days among `events` whose partition this process has not seen yet.
    fn unknown_days(&self, events: &[RawEvent]) -> Vec<NaiveDate> {
        let known = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let days: HashSet<NaiveDate> = events
            .iter()
            .map(|e| e.occurred_at.date_naive())
            .filter(|d| !known.contains(d))
            .collect();
        days.into_iter().collect()
    }

    fn remember(&self, day: NaiveDate) {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(day);
    }
}

/// What a database failure means for the batch consumer: an outage holds
/// the batch without counting a delivery; a statement the data makes fail
/// (SQLSTATE class 22 data exception, 23 integrity violation) is permanent,
/// so the consumer isolates the event that causes it and dead-letters it
/// alone; anything else (a lock or statement timeout) is transient.
fn classify(error: keel_db::Error) -> HandlerError {
    if error.is_unavailable() {
        return HandlerError::unavailable(error);
    }
    if error.is_bad_input() {
        HandlerError::permanent(error)
    } else {
        HandlerError::transient(error)
    }
}

fn undecodable(reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::from(<serde_json::Error as serde::de::Error>::custom(reason))
}

impl BatchHandler for IngestHandler {
    type Item = RawEvent;

    fn decode(&self, message: &Incoming) -> Result<RawEvent, DecodeError> {
        // PostgreSQL's jsonb cannot hold U+0000; such an event would fail
        // its whole batch on every redelivery, so it is rejected alone here.
        if message.body().windows(6).any(|w| w == b"\\u0000") {
            return Err(undecodable(
                "the body contains \\u0000, which jsonb cannot store",
            ));
        }
        let event: RawEvent = message.decode()?;
        event.validate().map_err(undecodable)?;
        Ok(event.normalize())
    }

    async fn handle(&self, events: Vec<RawEvent>) -> Result<(), HandlerError> {
        let started = Instant::now();
        let size = events.len();
        let cutoff = Utc::now().date_naive() - chrono::Days::new(u64::from(self.retention_days));
        // Past retention the partition is gone (or about to be), so a
        // redelivery could not be recognised: such events are not stored.
        let (events, expired): (Vec<RawEvent>, Vec<RawEvent>) = events
            .into_iter()
            .partition(|e| e.occurred_at.date_naive() >= cutoff);
        if !expired.is_empty() {
            tracing::warn!(count = expired.len(), %cutoff, "events older than the retention skipped");
            self.metrics.events(Fate::Expired, expired.len());
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| classify(keel_db::Error::from(e)))?;
        for day in self.unknown_days(&events) {
            store::ensure_partition(&client, day)
                .await
                .map_err(classify)?;
            self.remember(day);
        }
        let applied = store::apply_batch(&mut client, &events)
            .await
            .map_err(classify)?;
        self.metrics.events(Fate::Inserted, applied.inserted);
        self.metrics.events(Fate::Duplicate, applied.duplicates);
        self.metrics.batch(size, started.elapsed().as_secs_f64());
        if let Some(newest) = events.iter().map(|e| e.occurred_at).max() {
            let lag = (Utc::now() - newest).num_milliseconds();
            // Milliseconds fit f64 exactly for any realistic lag.
            #[allow(clippy::cast_precision_loss)]
            self.metrics.lag(lag as f64 / 1000.0);
        }
        Ok(())
    }
}
