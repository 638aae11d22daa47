//! Failures through the real consumer, relay and broker: the retry
//! schedule, the dead-letter queue and its archive, the event's bookkeeping.

use std::time::{Duration, Instant};

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;

use crate::support::*;

#[tokio::test]
async fn a_failing_shopify_api_retries_on_schedule_then_dead_letters_and_fails_the_event() {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let shopify = FakeShopify::start(Answer::Status(500)).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, Some(&shopify.url))).await;
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
    let shopify = FakeShopify::start(Answer::Status(404)).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, Some(&shopify.url))).await;

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

#[tokio::test]
async fn a_dead_lettered_job_requeued_by_an_admin_is_processed_once_the_api_recovers() {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let shopify = FakeShopify::start(Answer::Status(503)).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, Some(&shopify.url))).await;
    // The worker archives {ns}.dead into `dead_letters`, where the admin
    // API lists and requeues from.
    let event = captured(&db, "shopify", "orders/create", &shopify_order(503)).await;
    eventually(
        Duration::from_secs(30),
        "the dead job is archived",
        || async { dead_letter(&db).await.is_some() },
    )
    .await;
    let dead = dead_letter(&db).await;
    assert_eq!(event_state(&db, event).await.0, "failed");

    shopify.set_answer(Answer::Fulfillments {
        statuses: vec!["success"],
        delay: Duration::ZERO,
    });
    let mut admin = db.pool().get().await.unwrap();
    let tx = admin.transaction().await.unwrap();
    keel_dead_letters::requeue::requeue(&tx, dead.unwrap(), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    eventually(
        Duration::from_secs(30),
        "the requeued job is processed",
        || async { event_state(&db, event).await.0 == "processed" },
    )
    .await;
    let (_, attempts, last_error, processed_at) = event_state(&db, event).await;
    // Three failed attempts, then the requeued one.
    assert_eq!((attempts, last_error, processed_at), (4, None, true));
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    assert!(order_id_for(&db, 503).await.is_some());

    shutdown.cancel();
    worker.await.unwrap();
    shopify.stop().await;
    broker.cleanup().await;
}

/// The one archived dead letter's id, if archived yet.
async fn dead_letter(db: &TestDatabase) -> Option<uuid::Uuid> {
    let client = db.pool().get().await.unwrap();
    client
        .query_opt("SELECT id FROM dead_letters", &[])
        .await
        .unwrap()
        .map(|row| row.get(0))
}
