//! Several workers on one queue: every job applied exactly once.

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_webhooks::{NewEvent, capture};

use crate::support::*;

const JOBS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_competing_on_ten_thousand_jobs_apply_each_exactly_once() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut settings = settings(&db, &broker, None);
        settings.database.max_connections = 8;
        settings.jobs.webhook.prefetch = 16;
        settings.jobs.webhook.concurrency = 8;
        workers.push(run_worker(settings).await);
    }

    // Captured by 4 concurrent writers (within the test pool), as gateway
    // replicas would.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4u64 {
        let pool = db.pool().clone();
        writers.spawn(async move {
            let client = pool.get().await.unwrap();
            let headers = serde_json::json!({});
            for n in (writer..JOBS).step_by(4) {
                let id = 1_000_000 + n;
                let delivery = format!("delivery-{id}");
                capture(
                    &client,
                    &NewEvent {
                        source: "shopify",
                        topic: Some("orders/create"),
                        delivery_id: &delivery,
                        body: &shopify_order(id),
                        headers: &headers,
                    },
                )
                .await
                .unwrap();
            }
        });
    }
    writers.join_all().await;
    keel_outbox::wake_relays(&db.pool().get().await.unwrap())
        .await
        .unwrap();

    let client = db.pool().get().await.unwrap();
    eventually(
        Duration::from_secs(300),
        "every event processed",
        || async {
            let done: i64 = client
                .query_one(
                    "SELECT count(*) FROM webhook_events WHERE status = 'processed'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            done == JOBS as i64
        },
    )
    .await;

    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT external_id) FROM orders WHERE source = 'webhook:shopify'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (JOBS as i64, JOBS as i64)
    );
    assert_eq!(outbox_count(&db, "order.created").await, JOBS as i64);
    assert_eq!(outbox_count(&db, "order.updated").await, 0);
    let attempts: i64 = client
        .query_one("SELECT sum(attempts) FROM webhook_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, JOBS as i64);

    for (shutdown, task) in workers {
        shutdown.cancel();
        task.await.unwrap();
    }
    broker.cleanup().await;
}
