//! Real `worker` processes stopped the hard way (SIGKILL) and the polite
//! way (SIGTERM) with jobs in flight.

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::ServiceProcess;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_worker");

fn env(
    db: &TestDatabase,
    broker: &TestBroker,
    shopify: &FakeShopify,
) -> Vec<(&'static str, String)> {
    vec![
        ("KEEL_DATABASE__URL", db.url()),
        ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
        ("KEEL_AMQP__NAMESPACE", broker.namespace().to_owned()),
        ("KEEL_SHOPIFY__API_BASE_URL", shopify.url.clone()),
        ("KEEL_SHOPIFY__ACCESS_TOKEN", TOKEN.to_owned()),
        ("KEEL_OUTBOX__POLL_INTERVAL", "100ms".to_owned()),
    ]
}

/// Messages ready in the webhook job queue.
async fn queued(broker: &TestBroker) -> u32 {
    let channel = broker.channel().await;
    let queue = broker
        .topology()
        .job_queue(keel_contracts::jobs::JobQueue::Webhook)
        .name;
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing_and_the_job_is_applied_once() {
    let db = database().await;
    let broker = TestBroker::new().await;
    // Slow enough to be killed in the middle of the job.
    let shopify = FakeShopify::start(Answer::Fulfillments {
        statuses: vec!["open"],
        delay: Duration::from_secs(3),
    })
    .await;
    let env = env(&db, &broker, &shopify);
    let event = captured(&db, "shopify", "orders/create", &shopify_order(9)).await;

    let first = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(20),
        "the first worker calls the API",
        || async { shopify.hits() >= 1 },
    )
    .await;
    // Dropping the process handle sends SIGKILL: no shutdown path runs.
    drop(first);
    assert_eq!(event_state(&db, event).await.0, "received");

    let second = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "the redelivered job is applied",
        || async { event_state(&db, event).await.0 == "processed" },
    )
    .await;

    assert!(shopify.hits() >= 2);
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    let order = order_id_for(&db, 9).await.expect("one order");
    let client = db.pool().get().await.unwrap();
    let fulfillment: Option<String> = client
        .query_one(
            "SELECT fulfillment_status FROM orders WHERE id = $1",
            &[&order],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fulfillment.as_deref(), Some("pending"));
    assert_eq!(event_state(&db, event).await.1, 1);

    let metrics = reqwest::get(second.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"keel_webhook_events_handled_total{source="shopify",outcome="processed"} 1"#,
        "keel_messages_handled_total{queue=",
        "keel_messages_in_flight{queue=",
        "keel_message_handler_duration_seconds_bucket{",
        "keel_queue_messages{queue=",
        "keel_queue_consumers{queue=",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }

    assert_eq!(
        second.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    shopify.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn sigterm_lets_in_flight_jobs_finish_leaves_the_rest_queued_and_exits_0() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let shopify = FakeShopify::start(Answer::Fulfillments {
        statuses: vec!["success"],
        delay: Duration::from_secs(2),
    })
    .await;
    let mut env = env(&db, &broker, &shopify);
    env.push(("KEEL_JOBS__WEBHOOK__PREFETCH", "2".to_owned()));
    env.push(("KEEL_JOBS__WEBHOOK__CONCURRENCY", "2".to_owned()));
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(captured(&db, "shopify", "orders/create", &shopify_order(100 + n)).await);
    }

    let worker = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    // Jobs are in flight while their (2 s) Admin API call is. How many at
    // once depends on how the relay's publishes fell into the consumer's
    // batches (one or two, prefetch 2); every one started must finish.
    eventually(Duration::from_secs(20), "a job in flight", || async {
        shopify.hits() >= 1
    })
    .await;
    let status = worker.terminate(Duration::from_secs(20)).await;

    assert_eq!(status.code(), Some(0));
    let mut states = Vec::new();
    for event in &events {
        states.push(event_state(&db, *event).await.0);
    }
    let processed = states.iter().filter(|s| *s == "processed").count();
    let received = states.iter().filter(|s| *s == "received").count();
    let started = shopify.hits();
    assert!((1..=2).contains(&started), "{started} jobs started");
    assert_eq!((processed, received), (started, 5 - started), "{states:?}");
    assert_eq!(queued(&broker).await, u32::try_from(5 - started).unwrap());
    shopify.stop().await;
    broker.cleanup().await;
}
