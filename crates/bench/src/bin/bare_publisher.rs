//! `bare-publisher`: the broker's ceiling for the outbox relay.
//!
//! Publishes N persistent messages of a given size, with publisher
//! confirms, to a durable quorum queue (as Keel's queues are), pipelined
//! exactly as the relay does: groups of `--batch` messages with every
//! confirm in flight, each group split over up to 4 channels,
//! `--concurrent-batches` groups at a time (ADR 0028). No database: what is
//! left is the broker and the client. Prints one JSON line:
//! `{"messages":…,"seconds":…,"rate":…}` (plus the parameters).
//!
//! The queue, `<namespace>.bare-publisher`, is deleted at the end; the
//! namespace's standard topology (declared by every Keel connection) stays,
//! empty, and is reused by the next run.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use clap::Parser;
use keel_messaging::publisher::RoutedMessage;
use keel_messaging::{AmqpSettings, Broker, OutgoingMessage, Publisher};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Confirmed, pipelined publishing to a quorum queue; prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "bare-publisher", version)]
struct Args {
    /// Broker URL.
    #[arg(
        long,
        env = "KEEL_BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    url: String,
    /// Namespace of the queue (and of the topology Keel's connection declares).
    #[arg(long, default_value = "keel-bench-bare")]
    namespace: String,
    /// Messages to publish.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    messages: usize,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 400)]
    size: usize,
    /// Messages per pipelined group (the relay's `outbox.batch_size`).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Groups in flight at once (the relay's `outbox.concurrent_batches`).
    #[arg(long, default_value_t = 2)]
    concurrent_batches: usize,
    /// Pipeline channels of the publisher (each group uses up to
    /// `keel_messaging::publisher::CHANNELS_PER_GROUP` of them).
    #[arg(long, default_value_t = keel_messaging::publisher::DEFAULT_PIPELINE_CHANNELS)]
    channels: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    messages: usize,
    seconds: f64,
    rate: f64,
    message_bytes: usize,
    batch: usize,
    concurrent_batches: usize,
    channels: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let settings: AmqpSettings = serde_json::from_value(serde_json::json!({
        "url": args.url,
        "namespace": args.namespace,
    }))
    .context("amqp settings")?;
    let broker = Broker::new(settings, "bare-publisher");
    let channel = broker.channel().await.context("connecting to the broker")?;
    let queue = format!("{}.bare-publisher", args.namespace);
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .context("declaring the quorum queue")?;

    let publisher = Arc::new(Publisher::with_pipeline_channels(
        broker.clone(),
        args.channels,
    ));
    let body = vec![b'x'; args.size];
    let batch = args.batch.max(1);
    let started = Instant::now();
    let mut remaining = args.messages;
    let mut failures = 0usize;
    while remaining > 0 {
        // Up to `concurrent_batches` groups at once, as the relay's lanes.
        let mut groups = JoinSet::new();
        for _ in 0..args.concurrent_batches.max(1) {
            let size = batch.min(remaining);
            if size == 0 {
                break;
            }
            remaining -= size;
            let messages = group(&queue, &body, size);
            let publisher = publisher.clone();
            groups.spawn(async move {
                let results = publisher.publish_pipelined(&messages).await;
                results.iter().filter(|result| result.is_err()).count()
            });
        }
        while let Some(failed) = groups.join_next().await {
            failures += failed.context("a publishing task panicked")?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .context("deleting the queue")?;
    if failures > 0 {
        bail!("{failures} publishes were not confirmed");
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = args.messages as f64 / seconds;
    let report = Report {
        messages: args.messages,
        seconds,
        rate,
        message_bytes: args.size,
        batch,
        concurrent_batches: args.concurrent_batches.max(1),
        channels: args.channels,
    };
    let line = serde_json::to_string(&report)?;
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// One group of persistent, mandatory messages to `queue` through the
/// default exchange.
fn group(queue: &str, body: &[u8], size: usize) -> Vec<RoutedMessage> {
    (0..size)
        .map(|_| RoutedMessage {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            message: OutgoingMessage {
                id: Uuid::new_v4(),
                message_type: "bench.bare".to_owned(),
                body: body.to_vec(),
                headers: Default::default(),
                timestamp: Utc::now(),
                mandatory: true,
            },
        })
        .collect()
}
