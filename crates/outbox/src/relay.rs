//! The relay: moves committed outbox rows to the broker.
//!
//! Each batch runs in one transaction: lock the oldest unpublished rows
//! (`FOR UPDATE SKIP LOCKED`, so several relays — and several batches of
//! one relay — share the work without publishing a row twice), publish
//! them all with every confirm in flight at once, mark the confirmed rows
//! published in one statement, commit. A crash after the confirm and before
//! the commit leaves the rows unpublished, so they go out again:
//! at-least-once, which the consumers' inbox turns into once. A relay runs
//! `concurrent_batches` batches at a time, so one batch's database round
//! trips overlap another's publishing (ADR 0028).
//!
//! A row counts as published only if the broker acked it and returned no
//! message carrying its id (returns are matched by `message_id`, never by
//! the confirm lapin hands them to). A row the broker refuses (returned as
//! unroutable, nacked) or that cannot be read waits with a backoff while
//! the rest of the batch flows, and is parked after `max_rejections`
//! refusals; a broker that is down or slow stops the batch instead and
//! never counts against a row (ADR 0024). Pruning and backlog measuring run
//! on tasks of their own.
//!
//! The relay wakes on `NOTIFY outbox_<schema>` (sent by the enqueue on
//! commit) and, as a fallback for missed notifications, every poll interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use keel_db::Pool;
use keel_messaging::publisher::RoutedMessage;
use keel_messaging::{OutgoingMessage, Publisher, ReconnectSettings, Target};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::metrics::RelayMetrics;

/// How the relay batches and polls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOptions {
    /// Rows locked and published per transaction, all in flight at once.
    pub batch_size: u32,
    /// Batches one relay runs at a time (each its own transaction and
    /// pipeline channels): while one waits for its confirms, another reads
    /// or marks its rows (ADR 0028).
    pub concurrent_batches: u32,
    /// Look for rows this often even without a notification.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Published rows (and inbox claims) older than this are deleted; they
    /// only matter to operators looking back and to redelivery detection,
    /// which RabbitMQ bounds far below this.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often pruning runs (on its own task, never in the way of
    /// publishing).
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Refusals of a row by the broker (returned as unroutable, nacked) or
    /// failures to read it, after which the row is parked: kept with its
    /// reason, skipped until unparked. Broker outages do not count.
    pub max_rejections: u32,
    /// Wait before retrying a refused row, doubling per refusal up to
    /// `rejection_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub rejection_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub rejection_backoff_max: Duration,
    /// How often the backlog gauges are measured (on their own task).
    #[serde(with = "humantime_serde")]
    pub measure_interval: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            // 500 published a 190,000-row backlog 1.5× faster than 100 on
            // the 2-core benchmark machine (docs/benchmarks.md, webhooks).
            batch_size: 500,
            // See ADR 0028: two overlap the database and the broker; more
            // only add lock skipping on the 2-core machine.
            concurrent_batches: 2,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_interval: Duration::from_secs(600),
            // 1 + 2 + 4 + ... + 256 s: a row is parked after refusals
            // spread over about 8.5 minutes, past the 5-minute age alert.
            max_rejections: 10,
            rejection_backoff_min: Duration::from_secs(1),
            rejection_backoff_max: Duration::from_secs(300),
            measure_interval: Duration::from_secs(5),
        }
    }
}

impl RelayOptions {
    /// The wait after a row's `rejections`-th refusal (1-based).
    fn rejection_backoff(&self, rejections: u32) -> Duration {
        let doubled = self
            .rejection_backoff_min
            .saturating_mul(2u32.saturating_pow(rejections.saturating_sub(1).min(31)));
        doubled.min(self.rejection_backoff_max)
    }
}

/// Rows deleted per pruning statement: each statement is short, so pruning
/// a large history never holds locks or a connection for long.
const PRUNE_BATCH: i64 = 1_000;

/// The backlog as the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Unpublished rows the relay still tries (waiting ones included).
    pub rows: i64,
    /// Parked rows (unpublished, skipped until unparked).
    pub parked: i64,
    /// Age of the oldest unparked unpublished row, 0 when there is none.
    pub oldest_seconds: f64,
}

/// A parked row, for operators.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParkedRow {
    pub id: Uuid,
    pub target: String,
    pub routing_key: String,
    pub message_type: String,
    pub created_at: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
    pub attempts: i32,
    pub rejections: i32,
    /// Why the broker (or the relay) refused it the last time.
    pub last_error: Option<String>,
}

/// Lists parked rows, oldest first (at most `limit`).
pub async fn parked(pool: &Pool, limit: i64) -> Result<Vec<ParkedRow>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, target, routing_key, message_type, created_at, parked_at, attempts, \
             rejections, last_error FROM outbox \
             WHERE published_at IS NULL AND parked_at IS NOT NULL \
             ORDER BY parked_at, id LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ParkedRow {
            id: row.get("id"),
            target: row.get("target"),
            routing_key: row.get("routing_key"),
            message_type: row.get("message_type"),
            created_at: row.get("created_at"),
            parked_at: row.get("parked_at"),
            attempts: row.get("attempts"),
            rejections: row.get("rejections"),
            last_error: row.get("last_error"),
        })
        .collect())
}

/// Returns parked rows to the relay (all of them when `ids` is `None`):
/// their refusals start again from zero and they go out on the next pass.
/// `last_error` stays for the record. Returns how many rows were unparked.
pub async fn unpark(pool: &Pool, ids: Option<&[Uuid]>) -> Result<u64> {
    let client = pool.get().await?;
    let sql = "UPDATE outbox SET parked_at = NULL, next_attempt_at = NULL, rejections = 0 \
               WHERE published_at IS NULL AND parked_at IS NOT NULL \
               AND ($1::uuid[] IS NULL OR id = ANY($1))";
    let ids: Option<Vec<Uuid>> = ids.map(<[Uuid]>::to_vec);
    let unparked = client.execute(sql, &[&ids]).await?;
    if unparked > 0 {
        crate::wake_relays(&client).await?;
    }
    Ok(unparked)
}

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
        // Housekeeping runs beside the publishing loop: a long prune or a
        // slow count never delays a publish, and the gauges keep moving
        // while the loop drains a backlog.
        let pruner = tokio::spawn(prune_periodically(
            self.pool.clone(),
            self.options.clone(),
            listener_stop.clone(),
        ));
        let measurer = tokio::spawn(measure_periodically(
            self.pool.clone(),
            self.options.measure_interval,
            self.metrics.clone(),
            listener_stop.clone(),
        ));
        loop {
            // Drain with several batches in flight: each lane goes on while
            // its batches come back full.
            let lanes = (0..self.options.concurrent_batches.max(1)).map(|_| self.drain(&shutdown));
            futures::future::join_all(lanes).await;
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
        listener_stop.cancel();
        let _ = listener.await;
        let _ = pruner.await;
        let _ = measurer.await;
        tracing::info!("outbox relay stopped");
    }

    /// Publishes batches until one comes back short (nothing more waiting)
    /// or shutdown; backs off on failures (with the `amqp.reconnect`
    /// schedule) and retries.
    async fn drain(&self, shutdown: &CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.publish_batch(true).await {
                Ok(batch) => {
                    failures = 0;
                    if batch.selected < self.batch_limit() {
                        return;
                    }
                }
                Err(error) => {
                    failures += 1;
                    let delay = self.reconnect().delay(failures);
                    tracing::warn!(error = %error, ?delay, "outbox relay failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Publishes one batch of the oldest unpublished rows that are neither
    /// parked nor waiting out a refusal's backoff, marks the confirmed ones
    /// and records the refused ones (parking those past
    /// `max_rejections`); returns how many were published. Fails (after
    /// committing what was confirmed) when the broker itself failed.
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
    /// `retention`, in statements of [`PRUNE_BATCH`] rows so none holds
    /// locks for long. Unpublished rows are never touched, however old.
    /// Returns the number of rows deleted. Several relays pruning at once is
    /// harmless. The running relay calls it on a task of its own.
    pub async fn prune(&self) -> Result<u64> {
        prune(&self.pool, &self.options, &CancellationToken::new()).await
    }

    /// Unpublished rows the relay still tries (parked rows excluded).
    pub async fn backlog(&self) -> Result<i64> {
        Ok(measure(&self.pool).await?.rows)
    }

    /// Measures the backlog and sets the gauges, as the running relay does
    /// every `measure_interval`.
    pub async fn measure(&self) -> Result<Backlog> {
        let backlog = measure(&self.pool).await?;
        self.metrics.set_backlog(&backlog);
        Ok(backlog)
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
                // The payload as text: it goes out as the body as is, with
                // no parse and re-serialisation per row.
                "SELECT id, target, routing_key, message_type, payload::text AS body, headers, \
                        created_at, rejections \
                 FROM outbox \
                 WHERE published_at IS NULL AND parked_at IS NULL \
                   AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
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
        // Losing this transaction's commit in a PostgreSQL crash only
        // publishes its rows again (at-least-once; consumers dedupe), so it
        // need not wait for the WAL flush: a batch is marked sooner and the
        // next one starts sooner.
        transaction
            .batch_execute("SET LOCAL synchronous_commit = off")
            .await?;

        let mut outcome = Outcome::default();
        // Rows that cannot be made into a message are refused here; the
        // others go to the broker.
        let mut sent_rows: Vec<&Row> = Vec::with_capacity(rows.len());
        let mut messages: Vec<RoutedMessage> = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.to_message(row) {
                Ok(message) => {
                    sent_rows.push(row);
                    messages.push(message);
                }
                Err(error) => outcome.record(row, row.get("id"), Err(error), &self.options),
            }
        }
        // Publish the first row alone: if the broker is down, that is one
        // failed attempt, not a batch's worth. Then the rest, all in flight
        // at once. A row the broker refuses is the row's problem, not the
        // broker's: the rest of the batch goes on.
        let split = messages.len().min(1);
        let (head, rest) = messages.split_at(split);
        let (head_rows, rest_rows) = sent_rows.split_at(split);
        for (part, part_rows) in [(head, head_rows), (rest, rest_rows)] {
            if part.is_empty() || outcome.broker_error.is_some() {
                continue;
            }
            let results = self.publisher.publish_pipelined(part).await;
            for ((row, message), result) in part_rows.iter().zip(part).zip(results) {
                outcome.record(
                    row,
                    message.message.id,
                    result.map_err(Error::from),
                    &self.options,
                );
            }
        }

        if !outcome.confirmed.is_empty() {
            transaction
                .execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
                    &[&outcome.confirmed],
                )
                .await?;
        }
        if !outcome.failed.is_empty() {
            let failed = &outcome.failed;
            let ids: Vec<Uuid> = failed.iter().map(|f| f.id).collect();
            let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
            let rejected: Vec<bool> = failed.iter().map(|f| f.rejected).collect();
            let delays: Vec<f64> = failed.iter().map(|f| f.retry_in.as_secs_f64()).collect();
            let park: Vec<bool> = failed.iter().map(|f| f.park).collect();
            transaction
                .execute(
                    "UPDATE outbox AS o SET attempts = o.attempts + 1, last_error = f.error, \
                       rejections = o.rejections + CASE WHEN f.rejected THEN 1 ELSE 0 END, \
                       next_attempt_at = CASE WHEN f.rejected \
                         THEN now() + make_interval(secs => f.delay) ELSE o.next_attempt_at END, \
                       parked_at = CASE WHEN f.park THEN now() ELSE o.parked_at END \
                     FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::float8[], $5::bool[]) \
                       AS f(id, error, rejected, delay, park) \
                     WHERE o.id = f.id",
                    &[&ids, &errors, &rejected, &delays, &park],
                )
                .await?;
        }
        let confirmed = outcome.confirmed;
        let failed = outcome.failed;
        let first_error = outcome.broker_error;
        if commit {
            transaction.commit().await?;
            self.metrics.published(confirmed.len());
        } else {
            transaction.rollback().await?;
        }
        self.metrics.failed(failed.len());
        if commit {
            let parked = failed.iter().filter(|f| f.park).count();
            if parked > 0 {
                self.metrics.parked(parked);
            }
            for row in failed.iter().filter(|f| f.park) {
                tracing::error!(id = %row.id, reason = %row.error, "outbox row parked: the broker keeps refusing it; unpark it once the cause is fixed");
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok(Batch {
            selected,
            published: confirmed.len(),
        })
    }

    fn to_message(&self, row: &Row) -> Result<RoutedMessage> {
        let id: Uuid = row.get("id");
        let target: String = row.get("target");
        let target = Target::parse(&target).ok_or_else(|| Error::InvalidRow {
            id,
            reason: format!("unknown target {target:?}"),
        })?;
        let body: String = row.get("body");
        let headers: serde_json::Value = row.get("headers");
        // Headers are only trace context: unreadable ones are dropped
        // rather than blocking the message.
        let headers: BTreeMap<String, String> = serde_json::from_value(headers).unwrap_or_default();
        let created_at: DateTime<Utc> = row.get("created_at");
        let message = OutgoingMessage {
            id,
            message_type: row.get("message_type"),
            body: body.into_bytes(),
            headers,
            timestamp: created_at,
            // Every row must reach a queue: a message the broker cannot
            // route comes back (`basic.return`) and is retried, then parked,
            // never marked published. Events always have a queue bound:
            // the topology declares the durable subscribers' queues
            // (ADR 0024).
            mandatory: true,
        };
        Ok(RoutedMessage {
            exchange: self.publisher.broker().topology().exchange(target),
            routing_key: row.get("routing_key"),
            message,
        })
    }
}

/// What publishing a batch's rows came to.
#[derive(Debug, Default)]
struct Outcome {
    confirmed: Vec<Uuid>,
    failed: Vec<Failed>,
    /// The first failure that was the broker's, not a row's: the batch stops
    /// and the relay backs off.
    broker_error: Option<Error>,
}

/// One failed row, as it is written back.
#[derive(Debug)]
struct Failed {
    id: Uuid,
    error: String,
    /// Refused for a reason of its own: counts toward parking.
    rejected: bool,
    retry_in: Duration,
    park: bool,
}

impl Outcome {
    fn record(&mut self, row: &Row, id: Uuid, result: Result<()>, options: &RelayOptions) {
        let error = match result {
            Ok(()) => return self.confirmed.push(id),
            Err(error) => error,
        };
        let rejected = is_rejection(&error);
        let rejections = u32::try_from(row.get::<_, i32>("rejections"))
            .unwrap_or(0)
            .saturating_add(1);
        let park = rejected && rejections >= options.max_rejections.max(1);
        self.failed.push(Failed {
            id,
            error: error.to_string(),
            rejected,
            retry_in: options.rejection_backoff(rejections),
            park,
        });
        if !rejected {
            self.broker_error.get_or_insert(error);
        }
    }
}

/// Whether a failure is the row's own (the broker refused this message, or
/// it cannot be made into one) rather than the broker's being unreachable
/// or slow, which says nothing about the row and must never park it.
fn is_rejection(error: &Error) -> bool {
    match error {
        Error::InvalidRow { .. } | Error::Serialise(_) => true,
        Error::Broker(error) => matches!(
            error,
            keel_messaging::Error::Unroutable { .. }
                | keel_messaging::Error::Nacked { .. }
                | keel_messaging::Error::Serialise(_)
        ),
        Error::Database(_) => false,
    }
}

async fn prune(pool: &Pool, options: &RelayOptions, stop: &CancellationToken) -> Result<u64> {
    let retention_secs = i64::try_from(options.retention.as_secs()).unwrap_or(i64::MAX);
    let mut total = 0;
    for statement in [
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
         WHERE published_at < now() - make_interval(secs => $1::bigint) LIMIT $2)",
        "DELETE FROM inbox WHERE (consumer, message_id) IN (SELECT consumer, message_id \
         FROM inbox WHERE processed_at < now() - make_interval(secs => $1::bigint) LIMIT $2)",
    ] {
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            // A connection per statement: a long prune never keeps one
            // from the service's other work.
            let client = pool.get().await?;
            let deleted = client
                .execute(statement, &[&retention_secs, &PRUNE_BATCH])
                .await?;
            drop(client);
            total += deleted;
            if deleted < PRUNE_BATCH.unsigned_abs() {
                break;
            }
            // Let the writers and the relay in between statements.
            tokio::task::yield_now().await;
        }
    }
    Ok(total)
}

async fn prune_periodically(pool: Pool, options: RelayOptions, stop: CancellationToken) {
    loop {
        match prune(&pool, &options, &stop).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned old outbox and inbox rows"),
            Err(error) => tracing::warn!(error = %error, "outbox pruning failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(options.prune_interval) => {}
        }
    }
}

async fn measure(pool: &Pool) -> Result<Backlog> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL), \
                    count(*) FILTER (WHERE parked_at IS NOT NULL), \
                    coalesce(extract(epoch FROM now() - min(created_at) \
                      FILTER (WHERE parked_at IS NULL))::float8, 0) \
             FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    Ok(Backlog {
        rows: row.get(0),
        parked: row.get(1),
        oldest_seconds: row.get::<_, f64>(2).max(0.0),
    })
}

async fn measure_periodically(
    pool: Pool,
    interval: Duration,
    metrics: RelayMetrics,
    stop: CancellationToken,
) {
    loop {
        match measure(&pool).await {
            Ok(backlog) => metrics.set_backlog(&backlog),
            Err(error) => tracing::warn!(error = %error, "cannot measure the outbox backlog"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
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
