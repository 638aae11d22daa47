//! Jobs applied in batches (ADR 0026), through the real relay, broker and
//! consumer: a backlog captured before the worker starts is what one
//! prefetch window holds, and a generous `batch_wait` with one batch in
//! flight makes it one batch. Events applied by one transaction share its
//! `processed_at` (`now()` is the transaction's start), which is how these
//! tests see whether the batch path or the single path applied them.

use std::time::Duration;

use keel_contracts::jobs::WebhookProcess;
use keel_contracts::{Envelope, Job};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use uuid::Uuid;
use worker::settings::Settings;

use crate::support::*;

/// Settings that gather a small backlog into one batch.
fn batched(db: &TestDatabase, broker: &TestBroker) -> Settings {
    let mut settings = settings(db, broker, None);
    settings.jobs.webhook.batch_size = 100;
    settings.jobs.webhook.batch_wait = Duration::from_millis(500);
    settings.jobs.webhook.batches_in_flight = 1;
    settings
}

/// Distinct `processed_at` among `events`: the transactions that applied
/// them.
async fn transactions(db: &TestDatabase, events: &[Uuid]) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(DISTINCT processed_at) FROM webhook_events WHERE id = ANY($1)",
            &[&events],
        )
        .await
        .unwrap()
        .get(0)
}

async fn all_done(db: &TestDatabase, events: &[Uuid]) -> bool {
    let client = db.pool().get().await.unwrap();
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE id = ANY($1) AND status NOT IN ('processed', 'ignored', 'failed')",
            &[&events],
        )
        .await
        .unwrap()
        .get(0);
    pending == 0
}

/// `(status, attempts, processed_at)` of every event, in `events` order.
async fn states(db: &TestDatabase, events: &[Uuid]) -> Vec<(String, i32, Option<String>)> {
    let client = db.pool().get().await.unwrap();
    let mut states = Vec::new();
    for event in events {
        let row = client
            .query_one(
                "SELECT status, attempts, processed_at::text FROM webhook_events WHERE id = $1",
                &[event],
            )
            .await
            .unwrap();
        states.push((row.get(0), row.get(1), row.get(2)));
    }
    states
}

async fn orders(db: &TestDatabase) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

async fn dead_letters(db: &TestDatabase) -> Vec<(String, i32)> {
    let client = db.pool().get().await.unwrap();
    client
        .query(
            "SELECT death_reason, attempts FROM dead_letters ORDER BY death_reason",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A Shopify order body of `version` (`updated_at`).
fn shopify_version(id: u64, total: &str, updated_at: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "email": "jon@example.com",
        "currency": "EUR",
        "total_price": total,
        "updated_at": updated_at,
        "line_items": [{"id": 1, "sku": "LAMP-1", "quantity": 1, "price": total}]
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_backlog_is_applied_by_few_transactions_each_event_once() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let mut events = Vec::new();
    for id in 0..20 {
        events.push(captured(&db, "shopify", "orders/create", &shopify_order(9_000 + id)).await);
    }

    let (shutdown, worker) = run_worker(batched(&db, &broker)).await;
    eventually(Duration::from_secs(30), "the backlog is applied", || {
        all_done(&db, &events)
    })
    .await;

    for (status, attempts, _) in states(&db, &events).await {
        assert_eq!((status.as_str(), attempts), ("processed", 1));
    }
    assert_eq!(orders(&db).await, 20);
    assert_eq!(outbox_count(&db, "order.created").await, 20);
    // One at a time would be 20 transactions.
    let transactions = transactions(&db, &events).await;
    assert!(transactions <= 2, "{transactions} transactions for 20 jobs");

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn a_poison_job_fails_alone_with_its_normal_attempt_and_the_rest_of_its_batch_commits() {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let mut good = Vec::new();
    for id in 0..3 {
        good.push(captured(&db, "shopify", "orders/create", &shopify_order(9_100 + id)).await);
    }
    // Fails inside the batch's transaction: the order it pays does not
    // exist (permanent).
    let unknown_order = serde_json::json!({
        "id": "evt_poison", "type": "payment_intent.succeeded", "created": 1_700_000_000,
        "data": {"object": {"amount_received": 100, "currency": "eur",
            "metadata": {"order_id": Uuid::now_v7().to_string()}}}
    })
    .to_string();
    let poison = captured(
        &db,
        "stripe",
        "payment_intent.succeeded",
        unknown_order.as_bytes(),
    )
    .await;
    for id in 3..6 {
        good.push(captured(&db, "shopify", "orders/create", &shopify_order(9_100 + id)).await);
    }
    // Fails before it: a price the currency cannot hold (permanent).
    let unpayable = shopify_version(9_199, "1.999", "2026-01-01T10:00:00Z");
    let bad_payload = captured(&db, "shopify", "orders/create", &unpayable).await;

    let (shutdown, worker) = run_worker(batched(&db, &broker)).await;
    let mut all = good.clone();
    all.extend([poison, bad_payload]);
    eventually(Duration::from_secs(30), "every job is settled", || {
        all_done(&db, &all)
    })
    .await;

    for (status, attempts, _) in states(&db, &good).await {
        assert_eq!((status.as_str(), attempts), ("processed", 1));
    }
    assert_eq!(orders(&db).await, 6);
    assert_eq!(outbox_count(&db, "order.created").await, 6);
    for event in [poison, bad_payload] {
        let (status, attempts, last_error, processed_at) = event_state(&db, event).await;
        assert_eq!(
            (status.as_str(), attempts, processed_at),
            ("failed", 1, false)
        );
        assert!(last_error.is_some());
    }
    let (_, _, last_error, _) = event_state(&db, poison).await;
    assert!(last_error.unwrap().contains("payment for order"));
    eventually(
        Duration::from_secs(30),
        "both dead letters archived",
        || async { dead_letters(&db).await.len() == 2 },
    )
    .await;
    assert_eq!(
        dead_letters(&db).await,
        [("permanent".to_owned(), 1), ("permanent".to_owned(), 1)]
    );

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn two_events_of_one_order_in_one_batch_end_as_one_after_the_other() {
    let db = database().await;
    let broker = TestBroker::new().await;
    // Order 9201: the newer update arrives first, the older create after.
    let newer = captured(
        &db,
        "shopify",
        "orders/updated",
        &shopify_version(9_201, "30.00", "2026-01-01T12:00:00Z"),
    )
    .await;
    let older = captured(
        &db,
        "shopify",
        "orders/create",
        &shopify_version(9_201, "10.00", "2026-01-01T10:00:00Z"),
    )
    .await;
    // Order 9202: in order, create then update.
    let created = captured(
        &db,
        "shopify",
        "orders/create",
        &shopify_version(9_202, "10.00", "2026-01-01T10:00:00Z"),
    )
    .await;
    let updated = captured(
        &db,
        "shopify",
        "orders/updated",
        &shopify_version(9_202, "20.00", "2026-01-01T11:00:00Z"),
    )
    .await;
    let events = [newer, older, created, updated];

    let (shutdown, worker) = run_worker(batched(&db, &broker)).await;
    eventually(
        Duration::from_secs(30),
        "the four events are applied",
        || all_done(&db, &events),
    )
    .await;
    assert_eq!(transactions(&db, &events).await, 1, "not one batch");

    let (status, attempts, note, _) = event_state(&db, newer).await;
    assert_eq!((status.as_str(), attempts, note), ("processed", 1, None));
    let (status, attempts, note, _) = event_state(&db, older).await;
    assert_eq!((status.as_str(), attempts), ("ignored", 1));
    let note = note.unwrap();
    assert!(
        note.contains("not applied: this orders/create has updated_at 2026-01-01T10:00:00Z")
            && note.contains("stored updated_at 2026-01-01T12:00:00Z"),
        "{note}"
    );
    for event in [created, updated] {
        let (status, attempts, note, _) = event_state(&db, event).await;
        assert_eq!((status.as_str(), attempts, note), ("processed", 1, None));
    }

    let client = db.pool().get().await.unwrap();
    let totals: Vec<(String, i64, i64)> = client
        .query(
            "SELECT o.external_id, o.total_cents, \
                 (SELECT sum(unit_price_cents)::bigint FROM order_items i WHERE i.order_id = o.id) \
             FROM orders o ORDER BY o.external_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get::<_, Option<i64>>(2).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("9201".to_owned(), 3_000, 3_000),
            ("9202".to_owned(), 2_000, 2_000)
        ]
    );
    // 9201: created by the update; 9202: created, then updated.
    assert_eq!(outbox_count(&db, "order.created").await, 2);
    assert_eq!(outbox_count(&db, "order.updated").await, 1);

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let mut events = Vec::new();
    for id in 0..10 {
        events.push(captured(&db, "shopify", "orders/create", &shopify_order(9_300 + id)).await);
    }
    let (shutdown, worker) = run_worker(batched(&db, &broker)).await;
    eventually(Duration::from_secs(30), "the batch is applied", || {
        all_done(&db, &events)
    })
    .await;
    let before = states(&db, &events).await;
    let rows_before = outbox_count(&db, "order.created").await;

    // Every job again (a replay: new messages, same events), then one new
    // event, which is applied after them or with them.
    {
        let client = db.pool().get().await.unwrap();
        for &event_id in &events {
            let job = Envelope::new(Job::WebhookProcess(WebhookProcess { event_id }));
            keel_outbox::enqueue_job(&client, &job).await.unwrap();
        }
    }
    let sentinel = captured(&db, "shopify", "orders/create", &shopify_order(9_399)).await;
    eventually(
        Duration::from_secs(30),
        "the new event is applied",
        || async { event_state(&db, sentinel).await.0 == "processed" },
    )
    .await;

    assert_eq!(states(&db, &events).await, before);
    assert_eq!(outbox_count(&db, "order.created").await, rows_before + 1);
    assert_eq!(orders(&db).await, 11);

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn a_batch_held_through_a_database_outage_spends_no_attempt() {
    use secrecy::{ExposeSecret, SecretString};

    let db = database().await;
    // Three attempts in 300 ms: an outage that spent them would
    // dead-letter the jobs long before it ends.
    let broker = TestBroker::with_retry(short_retries()).await;
    let mut events = Vec::new();
    for id in 0..5 {
        events.push(captured(&db, "shopify", "orders/create", &shopify_order(9_400 + id)).await);
    }
    // The test publishes the jobs itself, while the database is away (the
    // relay could not read them then).
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "DELETE FROM outbox WHERE message_type = 'webhook.process'",
            &[],
        )
        .await
        .unwrap();

    // The worker reaches PostgreSQL through a proxy the test cuts.
    let mut settings = batched(&db, &broker);
    let mut url = url::Url::parse(settings.database.url.expose_secret()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = keel_testkit::proxy::TcpProxy::start(upstream.parse().unwrap()).await;
    url.set_port(Some(proxy.addr().port())).unwrap();
    settings.database.url = SecretString::from(url.to_string());
    let (shutdown, worker) = run_worker(settings).await;
    proxy.cut();

    let publisher = keel_messaging::Publisher::new(broker.broker("outage-test"));
    for &event_id in &events {
        let job = Envelope::new(Job::WebhookProcess(WebhookProcess { event_id }));
        publisher.publish_job(&job).await.unwrap();
    }
    // An outage longer than the runner's first pauses (it tries the batch
    // again after each): none of these tries may count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();

    eventually(Duration::from_secs(30), "the held batch is applied", || {
        all_done(&db, &events)
    })
    .await;
    for (status, attempts, _) in states(&db, &events).await {
        assert_eq!((status.as_str(), attempts), ("processed", 1));
    }
    assert_eq!(orders(&db).await, 5);
    assert_eq!(outbox_count(&db, "order.created").await, 5);
    assert!(dead_letters(&db).await.is_empty());

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}
