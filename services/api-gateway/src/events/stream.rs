//! One open `text/event-stream`: the frames, and the loop that writes them.
//!
//! Order of a stream's life: take a place in the hub (live events start
//! collecting in its buffer), then replay from PostgreSQL what finished
//! after the client's `Last-Event-ID`, then write live events, skipping any
//! the replay already wrote. Subscribing before replaying is what makes the
//! hand-over lossless: an export finishing during the replay is either in
//! the replay's rows or in the live buffer (or both, and written once).
//!
//! Between events a `: ping` comment every `events.heartbeat_interval`
//! keeps proxies from closing the idle connection. The stream ends when the
//! gateway shuts down, when the client falls more than `events.buffer`
//! events behind, or when an export cannot be loaded; the client reconnects
//! after the `retry:` hint and resumes with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use keel_commerce::exports::{self, Export, ExportStatus};
use keel_commerce::orders::domain::Scope;
use keel_db::Pool;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::event_id::EventId;
use crate::events::hub::{ExportEventKind, Notification, Subscription};
use crate::events::metrics::EventsMetrics;
use crate::events::position::Position;

/// The heartbeat: a comment line, ignored by `EventSource`.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// How far before its connection a fresh stream (no `Last-Event-ID`)
/// starts, for catch-ups after a broker reconnect: finish times come from
/// the database's clock, the connection time from the gateway's.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(2);

/// `retry: <ms>`: how long `EventSource` waits before reconnecting.
pub fn retry_frame(retry: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n\n", retry.as_millis()))
}

/// One event. `data` is split into one `data:` line per line, as the
/// format requires (compact JSON has none, but the frame must not depend
/// on that).
pub fn event_frame(id: EventId, event: &str, data: &str) -> Bytes {
    let mut frame = format!("id: {id}\nevent: {event}\n");
    for line in data.split('\n') {
        frame.push_str("data: ");
        frame.push_str(line.trim_end_matches('\r'));
        frame.push('\n');
    }
    frame.push('\n');
    Bytes::from(frame)
}

/// The event an export's current status announces, if it is finished.
fn kind_of(status: ExportStatus) -> Option<ExportEventKind> {
    match status {
        ExportStatus::Succeeded => Some(ExportEventKind::Completed),
        ExportStatus::Failed => Some(ExportEventKind::Failed),
        _ => None,
    }
}

/// Turns an export into its event's `data`: the JSON
/// `GET /api/v1/exports/{id}` answers with. The exports area owns that view
/// (it mints `download_url`), so the start-up hands it in.
#[derive(Clone)]
pub struct ExportRenderer(Arc<RenderFn>);

type RenderFn = dyn Fn(&Export) -> serde_json::Result<String> + Send + Sync;

impl ExportRenderer {
    pub fn new(
        render: impl Fn(&Export) -> serde_json::Result<String> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(render))
    }

    /// The stored export as `keel_commerce` serialises it (no `download_url`).
    pub fn stored() -> Self {
        Self::new(serde_json::to_string)
    }

    pub fn render(&self, export: &Export) -> serde_json::Result<String> {
        (self.0)(export)
    }
}

impl std::fmt::Debug for ExportRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportRenderer")
    }
}

/// What a stream needs from the area, per connection.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub replay_batch: i64,
    pub render: ExportRenderer,
}

/// An open stream's state.
pub struct EventStream {
    pool: Pool,
    subscription: Subscription,
    position: Position,
    queued: VecDeque<Bytes>,
    heartbeat: Interval,
    closing: CancellationToken,
    replay_batch: i64,
    render: ExportRenderer,
    metrics: EventsMetrics,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("user", &self.subscription.user())
            .field("cursor", &self.position.cursor())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Opens a stream on `subscription` (taken already, so nothing that
    /// happens from here on is missed), replaying what finished after
    /// `resume_after` first, if given.
    pub async fn open(
        pool: Pool,
        subscription: Subscription,
        resume_after: Option<EventId>,
        options: &StreamOptions,
        closing: CancellationToken,
        metrics: EventsMetrics,
    ) -> Result<Self, exports::Error> {
        let start = resume_after.unwrap_or_else(|| EventId {
            finished_at_micros: (Utc::now() - CLOCK_SKEW_ALLOWANCE).timestamp_micros(),
            export_id: Uuid::nil(),
        });
        let period = options.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A stream that could not write for a while needs one ping, not a burst.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stream = Self {
            pool,
            subscription,
            position: Position::after(start),
            queued: VecDeque::from([retry_frame(options.retry)]),
            heartbeat,
            closing,
            replay_batch: options.replay_batch,
            render: options.render.clone(),
            metrics,
        };
        if resume_after.is_some() {
            stream.catch_up().await?;
        }
        Ok(stream)
    }

    /// The response body.
    pub fn into_body(self) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
        futures::stream::unfold(self, |mut stream| async move {
            let frame = stream.next_frame().await?;
            Some((Ok(frame), stream))
        })
    }

    /// The next frame to write; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if self.closing.is_cancelled() {
                return None;
            }
            if let Some(frame) = self.queued.pop_front() {
                return Some(frame);
            }
            tokio::select! {
                biased;
                () = self.closing.cancelled() => return None,
                received = self.subscription.receiver.recv() => match received {
                    Ok(notification) => {
                        if let Err(error) = self.live(notification).await {
                            tracing::warn!(error = %error, "cannot load an export for its event; closing the stream for the client to resume");
                            return None;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "event stream fell behind; closing it for the client to resume");
                        self.metrics.closed_lagging();
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
                changed = self.subscription.resync.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    if let Err(error) = self.catch_up().await {
                        tracing::warn!(error = %error, "cannot catch up from PostgreSQL; closing the stream for the client to resume");
                        return None;
                    }
                }
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(HEARTBEAT)),
            }
        }
    }

    /// A live notification: load the export as it is now and queue it.
    async fn live(&mut self, notification: Notification) -> Result<(), exports::Error> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let user = self.subscription.user();
        // Scoped to the stream's user: the hub only routes a user's events
        // to their streams, and this keeps it so whatever the message said.
        let export = match exports::get(&client, notification.export_id, Scope::User(user)).await {
            Ok(export) => export,
            // Removed since (retention), or not this user's: nothing to say.
            Err(exports::Error::NotFound) => return Ok(()),
            Err(error) => return Err(error),
        };
        drop(client);
        if let Some(id) = event_id_of(&export)
            && self.position.admit(id)
        {
            self.queue(id, notification.kind, &export);
        }
        Ok(())
    }

    /// Queues what finished after the cursor, page by page.
    async fn catch_up(&mut self) -> Result<(), exports::Error> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let user = self.subscription.user();
        loop {
            let from = self.position.cursor();
            let Some(finished_at) = from.finished_at() else {
                return Ok(());
            };
            // One microsecond earlier: `finished_since` is strict, and
            // another export may have finished in the cursor's microsecond
            // with a higher id. `admit_replayed` drops the cursor itself.
            let after = finished_at - chrono::Duration::microseconds(1);
            let page = exports::finished_since(&client, user, after, self.replay_batch).await?;
            let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= self.replay_batch;
            for export in &page {
                if let (Some(id), Some(kind)) = (event_id_of(export), kind_of(export.status))
                    && self.position.admit_replayed(from, id)
                {
                    self.queue(id, kind, export);
                }
            }
            // A short page was the last one; a page that did not move the
            // cursor would repeat for ever.
            if !full || self.position.cursor() == from {
                return Ok(());
            }
        }
    }

    fn queue(&mut self, id: EventId, kind: ExportEventKind, export: &Export) {
        match self.render.render(export) {
            Ok(data) => {
                self.queued
                    .push_back(event_frame(id, kind.event_name(), &data));
                self.metrics.delivered(kind.event_name());
            }
            Err(error) => {
                tracing::error!(error = %error, export_id = %export.id, "cannot serialise an export");
            }
        }
    }
}

/// The export's event id; `None` while it is not finished.
fn event_id_of(export: &Export) -> Option<EventId> {
    export
        .finished_at
        .map(|finished_at| EventId::new(finished_at, export.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_has_id_event_and_data_lines_then_a_blank_line() {
        let id: EventId = "1700000000000000-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e"
            .parse()
            .unwrap();
        let frame = event_frame(id, "export.completed", r#"{"id":"x"}"#);
        assert_eq!(
            frame,
            Bytes::from(
                "id: 1700000000000000-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e\n\
                 event: export.completed\n\
                 data: {\"id\":\"x\"}\n\n"
            )
        );
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        let id: EventId = "1-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e".parse().unwrap();
        let frame = event_frame(id, "export.failed", "a\r\nb");
        assert!(
            frame.ends_with(b"data: a\ndata: b\n\n"),
            "{:?}",
            std::str::from_utf8(&frame)
        );
    }

    #[test]
    fn the_retry_hint_is_in_milliseconds() {
        assert_eq!(
            retry_frame(Duration::from_secs(3)),
            Bytes::from("retry: 3000\n\n")
        );
    }
}
