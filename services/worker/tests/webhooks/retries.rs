//! Failures through the real consumer, relay and broker: the retry
//! schedule, the dead-letter queue and its archive, the event's bookkeeping.

use std::time::{Duration, Instant};

use keel_testkit::broker::TestBroker;
use keel_testkit::redis::TestRedis;

use crate::support::*;

#[tokio::test]
async fn a_failing_shopify_api_retries_on_schedule_then_dead_letters_and_fails_the_event() {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let redis = TestRedis::new();
    let shopify = FakeShopify::start(Answer::Status(500)).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, &redis, Some(&shopify.url))).await;
    let started = Instant::now();

    let event = captured(&db, "shopify", "orders/create", &shopify_order(500)).await;

    eventually(Duration::from_secs(30), "the event fails", || async {
        event_state(&db, event).await.0 == "failed"
    })
    .await;
    // Three attempts: the first, then after 100 ms and after 200 ms.
    let (_, attempts, last_error, processed_at) = event_state(&db, event).await;
    assert_eq!(attempts, 3);
    assert!(
        last_error.as_deref().unwrap().contains("500"),
        "{last_error:?}"
    );
    assert!(!processed_at);
    assert_eq!(shopify.hits(), 3);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Nothing applied: the order waits for a successful attempt.
    assert_eq!(order_id_for(&db, 500).await, None);

    // The worker's archiver drains {ns}.dead into `dead_letters`
    // (keel-dead-letters), with the runner's death headers as columns.
    eventually(Duration::from_secs(30), "the dead job is archived", || async {
        let client = db.pool().get().await.unwrap();
        client
            .query_opt(
                "SELECT 1 FROM dead_letters WHERE death_reason = 'retries-exhausted' AND attempts = 3",
                &[],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;

    shutdown.cancel();
    worker.await.unwrap();
    shopify.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_refusing_shopify_api_dead_letters_at_once() {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let redis = TestRedis::new();
    let shopify = FakeShopify::start(Answer::Status(404)).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, &redis, Some(&shopify.url))).await;

    let event = captured(&db, "shopify", "orders/create", &shopify_order(404)).await;

    eventually(Duration::from_secs(30), "the event fails", || async {
        event_state(&db, event).await.0 == "failed"
    })
    .await;
    let (_, attempts, last_error, _) = event_state(&db, event).await;
    assert_eq!(attempts, 1);
    assert!(last_error.unwrap().contains("404"));
    assert_eq!(shopify.hits(), 1);

    shutdown.cancel();
    worker.await.unwrap();
    shopify.stop().await;
    broker.cleanup().await;
}
