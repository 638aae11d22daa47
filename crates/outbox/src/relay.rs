//! The relay: moves committed outbox rows to the broker.
//!
//! Each batch runs in one transaction: lock the oldest unpublished rows
//! (`FOR UPDATE SKIP LOCKED`, so several relays share the work without
//! publishing a row twice), publish each and wait for the broker's confirm,
//! mark the confirmed rows published, commit. A crash after the confirm and
//! before the commit leaves the rows unpublished, so they go out again:
//! at-least-once, which the consumers' inbox turns into once.
//!
//! The relay wakes on `NOTIFY outbox_<schema>` (sent by the enqueue on
//! commit) and, as a fallback for missed notifications, every poll interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use keel_db::Pool;
use keel_messaging::{OutgoingMessage, Publisher, ReconnectSettings, Target};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metrics::RelayMetrics;

/// Publishes in flight at once within a batch: enough to hide confirm
/// round trips, few enough not to flood a recovering broker.
const PUBLISH_CONCURRENCY: usize = 32;

/// How the relay batches and polls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOptions {
    /// Rows locked and published per transaction.
    pub batch_size: u32,
    /// Look for rows this often even without a notification.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Published rows (and inbox claims) older than this are deleted; they
    /// only matter to operators looking back and to redelivery detection,
    /// which RabbitMQ bounds far below this.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            // 500 published a 190,000-row backlog 1.5× faster than 100 on
            // the 2-core benchmark machine (docs/benchmarks.md, webhooks).
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(600),
        }
    }
}

/// How often the backlog gauge is refreshed while the relay is busy.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    selected: usize,
    published: usize,
}

/// Publishes the outbox of one schema.
#[derive(Debug)]
pub struct Relay {
    pool: Pool,
    listen: tokio_postgres::Config,
    channel: String,
    publisher: Publisher,
    options: RelayOptions,
    metrics: RelayMetrics,
    /// Raised by NOTIFYs (through the listener) and by in-process writers
    /// ([`Relay::waker`]).
    wake: Arc<Notify>,
}

impl Relay {
    /// `pool` is the service's pool (pinned to `schema`); `listen` is where
    /// the relay opens its own connection for `LISTEN` (the same database;
    /// plain TCP). Exchange names come from the publisher's topology.
    pub fn new(
        pool: Pool,
        listen: tokio_postgres::Config,
        schema: &str,
        publisher: Publisher,
        options: RelayOptions,
        metrics: RelayMetrics,
    ) -> Self {
        Self {
            pool,
            listen,
            channel: format!("outbox_{schema}"),
            publisher,
            options,
            metrics,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A waker for writers in this process: it raises this relay directly,
    /// with no database round trip. The relay publishes every pending row
    /// when woken, other processes' rows included.
    pub fn waker(&self) -> crate::RelayWaker {
        crate::RelayWaker::local(self.wake.clone())
    }

    /// Runs until `shutdown` is cancelled. Never gives up: database or broker
    /// failures are logged and retried with the `amqp.reconnect` backoff.
    /// A batch in progress at shutdown finishes (its publishes are bounded
    /// by `amqp.publish_timeout`).
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.wake.clone();
        let listener_stop = shutdown.child_token();
        let listener = tokio::spawn(listen(
            self.listen.clone(),
            self.channel.clone(),
            wake.clone(),
            self.reconnect().clone(),
            listener_stop.clone(),
        ));
        let mut failures = 0u32;
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut last_backlog: Option<tokio::time::Instant> = None;
        'run: loop {
            // Drain: full batches mean more rows are waiting.
            loop {
                if shutdown.is_cancelled() {
                    break 'run;
                }
                match self.publish_batch(true).await {
                    Ok(batch) => {
                        failures = 0;
                        if batch.selected < self.batch_limit() {
                            break;
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        let delay = self.reconnect().delay(failures);
                        tracing::warn!(error = %error, ?delay, "outbox relay failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break 'run,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            // A count per wake-up would cost a query per batch when writers
            // keep the relay busy; the gauge needs no more than one a second.
            if last_backlog.is_none_or(|at| at.elapsed() >= BACKLOG_INTERVAL) {
                last_backlog = Some(tokio::time::Instant::now());
                match self.backlog().await {
                    Ok(rows) => self.metrics.set_backlog(rows),
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot measure the outbox backlog");
                    }
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= self.options.prune_interval) {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune().await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned old outbox and inbox rows"),
                    Err(error) => tracing::warn!(error = %error, "outbox pruning failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
        listener_stop.cancel();
        let _ = listener.await;
        tracing::info!("outbox relay stopped");
    }

    /// Publishes one batch of the oldest unpublished rows and marks the
    /// confirmed ones; returns how many were published. Fails (after
    /// committing what was confirmed) when any publish failed.
    ///
    /// Public so tests and tools can drain the outbox deterministically.
    pub async fn publish_pending(&self) -> Result<usize> {
        Ok(self.publish_batch(true).await?.published)
    }

    /// What a relay that crashed between the broker's confirm and its own
    /// commit did: publishes a batch, then rolls back instead of marking the
    /// rows. For tests of the at-least-once path only.
    #[doc(hidden)]
    pub async fn publish_pending_then_roll_back(&self) -> Result<usize> {
        Ok(self.publish_batch(false).await?.published)
    }

    /// Deletes published outbox rows and inbox claims older than
    /// `retention`, in bounded batches so no statement holds locks for long.
    /// Unpublished rows are never touched, however old. Returns the number
    /// of rows deleted. Several relays pruning at once is harmless.
    pub async fn prune(&self) -> Result<u64> {
        const BATCH: i64 = 10_000;
        let retention_secs = i64::try_from(self.options.retention.as_secs()).unwrap_or(i64::MAX);
        let client = self.pool.get().await?;
        let mut total = 0;
        for statement in [
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE published_at < now() - make_interval(secs => $1::bigint) LIMIT $2)",
            "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id \
             FROM inbox WHERE processed_at < now() - make_interval(secs => $1::bigint) LIMIT $2)",
        ] {
            loop {
                let deleted = client
                    .execute(statement, &[&retention_secs, &BATCH])
                    .await?;
                total += deleted;
                if deleted < BATCH.unsigned_abs() {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Rows not yet published.
    pub async fn backlog(&self) -> Result<i64> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    fn reconnect(&self) -> &ReconnectSettings {
        &self.publisher.broker().settings().reconnect
    }

    fn batch_limit(&self) -> usize {
        usize::try_from(self.options.batch_size).unwrap_or(usize::MAX)
    }

    async fn publish_batch(&self, commit: bool) -> Result<Batch> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let limit = i64::from(self.options.batch_size.max(1));
        let rows = transaction
            .query(
                "SELECT id, target, routing_key, message_type, payload, headers, created_at \
                 FROM outbox \
                 WHERE published_at IS NULL \
                 ORDER BY created_at, id \
                 LIMIT $1 \
                 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?;
        if rows.is_empty() {
            transaction.rollback().await?;
            return Ok(Batch {
                selected: 0,
                published: 0,
            });
        }
        let selected = rows.len();

        let mut confirmed: Vec<Uuid> = Vec::with_capacity(selected);
        let mut failed: Vec<(Uuid, String)> = Vec::new();
        let mut first_error: Option<Error> = None;
        // Publish the first row alone: if the broker is down, that is one
        // failed attempt, not a batch's worth of reconnects.
        let (head, rest) = rows.split_at(1);
        for row in head {
            let (id, result) = self.publish_row(row).await;
            record(id, result, &mut confirmed, &mut failed, &mut first_error);
        }
        if first_error.is_none() {
            for chunk in rest.chunks(PUBLISH_CONCURRENCY) {
                // Collected before awaiting, so no borrowing closure is held
                // across the await (that would make the future not `Send`).
                let publishes: Vec<_> = chunk.iter().map(|row| self.publish_row(row)).collect();
                for (id, result) in futures::future::join_all(publishes).await {
                    record(id, result, &mut confirmed, &mut failed, &mut first_error);
                }
            }
        }

        if !confirmed.is_empty() {
            transaction
                .execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
                    &[&confirmed],
                )
                .await?;
        }
        if !failed.is_empty() {
            let (ids, errors): (Vec<Uuid>, Vec<String>) = failed.iter().cloned().unzip();
            transaction
                .execute(
                    "UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = f.error \
                     FROM unnest($1::uuid[], $2::text[]) AS f(id, error) \
                     WHERE o.id = f.id",
                    &[&ids, &errors],
                )
                .await?;
        }
        if commit {
            transaction.commit().await?;
            self.metrics.published(confirmed.len());
        } else {
            transaction.rollback().await?;
        }
        self.metrics.failed(failed.len());
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok(Batch {
            selected,
            published: confirmed.len(),
        })
    }

    async fn publish_row(&self, row: &Row) -> (Uuid, Result<()>) {
        let id: Uuid = row.get("id");
        let result = async {
            let (exchange, routing_key, message) = self.to_message(row)?;
            self.publisher
                .publish(&exchange, &routing_key, message)
                .await?;
            Ok(())
        }
        .await;
        (id, result)
    }

    fn to_message(&self, row: &Row) -> Result<(String, String, OutgoingMessage)> {
        let id: Uuid = row.get("id");
        let target: String = row.get("target");
        let target = Target::parse(&target).ok_or_else(|| Error::InvalidRow {
            id,
            reason: format!("unknown target {target:?}"),
        })?;
        let payload: serde_json::Value = row.get("payload");
        let headers: serde_json::Value = row.get("headers");
        // Headers are only trace context: unreadable ones are dropped
        // rather than blocking the message.
        let headers: BTreeMap<String, String> = serde_json::from_value(headers).unwrap_or_default();
        let created_at: DateTime<Utc> = row.get("created_at");
        let message = OutgoingMessage {
            id,
            message_type: row.get("message_type"),
            body: serde_json::to_vec(&payload)?,
            headers,
            timestamp: created_at,
            // A job must reach its queue; an event may have no subscriber.
            mandatory: target == Target::Jobs,
        };
        let exchange = self.publisher.broker().topology().exchange(target);
        Ok((exchange, row.get("routing_key"), message))
    }
}

fn record(
    id: Uuid,
    result: Result<()>,
    confirmed: &mut Vec<Uuid>,
    failed: &mut Vec<(Uuid, String)>,
    first_error: &mut Option<Error>,
) {
    match result {
        Ok(()) => confirmed.push(id),
        Err(error) => {
            failed.push((id, error.to_string()));
            first_error.get_or_insert(error);
        }
    }
}

/// Keeps a `LISTEN` connection open (reconnecting with backoff) and turns
/// each notification into a wake-up of the relay loop.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    wake: Arc<Notify>,
    reconnect: ReconnectSettings,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        match listen_once(&config, &channel, &wake, &stop).await {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                let delay = reconnect.delay(failures);
                tracing::warn!(error = %error, ?delay, "outbox LISTEN connection lost; polling until it is back");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(reconnect.delay(failures)) => {}
        }
    }
}

/// Why a `LISTEN` connection ended.
#[derive(Debug, thiserror::Error)]
enum ListenFailure {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the LISTEN connection closed")]
    Closed,
}

/// `Ok` on stop; `Err` when the connection failed.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    wake: &Notify,
    stop: &CancellationToken,
) -> Result<(), ListenFailure> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection must be polled for the LISTEN to complete and for
    // notifications to arrive: drive it on its own task.
    let (notifications_tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notifications_tx.send(()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let quoted = channel.replace('"', "\"\"");
    client
        .batch_execute(&format!("LISTEN \"{quoted}\""))
        .await?;
    // Rows may have been committed while we were not listening.
    wake.notify_one();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                driver.abort();
                return Ok(());
            }
            notification = notifications.recv() => match notification {
                Some(()) => wake.notify_one(),
                // The driver ended: the connection is gone.
                None => break,
            },
        }
    }
    drop(client);
    match driver.await {
        Ok(Err(error)) => Err(error.into()),
        _ => Err(ListenFailure::Closed),
    }
}
