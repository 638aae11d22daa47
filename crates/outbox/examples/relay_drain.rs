//! Times the relay draining a filled outbox, next to a bare pipelined
//! publisher sending as many messages of the same size to the same queue,
//! in the same run (issue 15, ADR 0028).
//!
//! Needs the test servers (`KEEL_TEST_DATABASE_URL`, `KEEL_TEST_AMQP_URL`);
//! creates a database and an AMQP namespace of its own and removes them.
//!
//! ```text
//! cargo run --release -p keel-outbox --example relay_drain -- \
//!     [rows] [relays] [batch_size] [concurrent_batches] [channels]
//! ```
//!
//! Prints one JSON line: rows, relays, seconds, rows_per_second and the
//! bare publisher's rate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use chrono::Utc;
use keel_contracts::jobs::{JobQueue, WebhookProcess};
use keel_contracts::{Envelope, Job};
use keel_messaging::publisher::RoutedMessage;
use keel_messaging::{OutgoingMessage, Publisher, Target};
use keel_outbox::{MIGRATIONS, Relay, RelayMetrics, RelayOptions};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use lapin::options::QueuePurgeOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SCHEMA: &str = "app";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rows: i64 = args.next().map_or(100_000, |a| a.parse().unwrap());
    let relays: usize = args.next().map_or(1, |a| a.parse().unwrap());
    let defaults = RelayOptions::default();
    let options = RelayOptions {
        batch_size: args
            .next()
            .map_or(defaults.batch_size, |a| a.parse().unwrap()),
        concurrent_batches: args
            .next()
            .map_or(defaults.concurrent_batches, |a| a.parse().unwrap()),
        ..defaults
    };
    let channels: usize = args
        .next()
        .map_or(keel_messaging::publisher::DEFAULT_PIPELINE_CHANNELS, |a| {
            a.parse().unwrap()
        });
    let test = TestBroker::new().await;
    let db = TestDatabase::create(SCHEMA, &[&MIGRATIONS]).await;
    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    let payload = serde_json::to_value(Envelope::new(Job::WebhookProcess(WebhookProcess {
        event_id: Uuid::new_v4(),
    })))
    .unwrap();
    let body_size = serde_json::to_vec(&payload).unwrap().len();

    // The bare publisher first: the same message count and size, the same
    // queue, confirmed, all in flight in groups of the relay's batch size.
    let bare = bare_rate(&test, rows, body_size).await;
    test.channel()
        .await
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();

    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (id, target, routing_key, message_type, payload, created_at) \
             SELECT gen_random_uuid(), 'jobs', $1, 'webhook.process', $2::jsonb, \
                    now() - make_interval(secs => ($3 - g) / 1000.0) \
             FROM generate_series(1::bigint, $3::bigint) AS g",
            &[&JobQueue::Webhook.routing_key(), &payload, &rows],
        )
        .await
        .unwrap();
    client.batch_execute("VACUUM ANALYZE outbox").await.unwrap();

    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..relays {
        let relay = Relay::new(
            db.pool().clone(),
            db.url().parse().unwrap(),
            SCHEMA,
            Publisher::with_pipeline_channels(test.broker(&format!("relay-{i}")), channels),
            options.clone(),
            RelayMetrics::default(),
        );
        tasks.push(tokio::spawn(relay.run(stop.clone())));
    }
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    drop(client);
    #[allow(clippy::cast_precision_loss)]
    let rate = rows as f64 / seconds;
    println!(
        "{{\"rows\":{rows},\"relays\":{relays},\"batch_size\":{},\"concurrent_batches\":{},\"channels\":{channels},\"body_bytes\":{body_size},\"seconds\":{seconds:.3},\"rows_per_second\":{rate:.0},\"bare_publisher_per_second\":{bare:.0},\"ratio\":{:.2}}}",
        options.batch_size,
        options.concurrent_batches,
        rate / bare
    );
    test.cleanup().await;
}

async fn bare_rate(test: &TestBroker, count: i64, body_size: usize) -> f64 {
    let publisher = Publisher::new(test.broker("bare"));
    let exchange = test.topology().exchange(Target::Jobs);
    let group = 500;
    let started = Instant::now();
    let mut sent = 0;
    while sent < count {
        let messages: Vec<RoutedMessage> = (0..group.min(count - sent))
            .map(|_| RoutedMessage {
                exchange: exchange.clone(),
                routing_key: JobQueue::Webhook.routing_key().to_owned(),
                message: OutgoingMessage {
                    id: Uuid::new_v4(),
                    message_type: "webhook.process".to_owned(),
                    body: vec![b' '; body_size],
                    headers: Default::default(),
                    timestamp: Utc::now(),
                    mandatory: true,
                },
            })
            .collect();
        for result in publisher.publish_pipelined(&messages).await {
            result.unwrap();
        }
        sent += i64::try_from(messages.len()).unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = count as f64 / started.elapsed().as_secs_f64();
    rate
}
