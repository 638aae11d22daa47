//! Business rules a webhook must not bend: a payment marks an order paid
//! only for its amount and currency, and an older Shopify version of an
//! order never overwrites a newer one, whatever way it arrives.

use std::time::Duration;

use keel_commerce::orders::domain::{OrderStatus, Scope};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use uuid::Uuid;
use worker::webhooks::shopify::ShopifyApi;
use worker::webhooks::{JobEnd, WebhookHandler, WebhookMetrics};

use crate::support::*;

/// The handler as the worker builds it.
fn handler(db: &TestDatabase, settings: &worker::settings::Settings) -> WebhookHandler {
    WebhookHandler::new(
        db.pool().clone(),
        keel_outbox::RelayWaker::new(db.pool().clone()),
        &settings.webhooks,
        ShopifyApi::from_settings(&settings.shopify).unwrap(),
        settings.amqp.retry.max_attempts(),
        WebhookMetrics::default(),
    )
}

/// A `payment_intent.succeeded` as Stripe sends it, for `order_id`.
fn payment(order_id: Uuid, amount_received: i64, currency: &str) -> Vec<u8> {
    serde_json::json!({
        "id": format!("evt_{}", Uuid::new_v4().simple()),
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": format!("pi_{}", Uuid::new_v4().simple()),
            "object": "payment_intent",
            "amount": amount_received,
            "amount_received": amount_received,
            "currency": currency,
            "status": "succeeded",
            "metadata": {"order_id": order_id.to_string()},
        }},
    })
    .to_string()
    .into_bytes()
}

async fn stored_status(db: &TestDatabase, id: Uuid) -> OrderStatus {
    let client = db.pool().get().await.unwrap();
    keel_commerce::orders::get(&client, id, Scope::All)
        .await
        .unwrap()
        .status
}

#[tokio::test]
async fn a_payment_of_another_amount_or_currency_fails_its_event_with_a_readable_reason_and_leaves_the_order_unpaid()
 {
    let db = database().await;
    let broker = TestBroker::with_retry(short_retries()).await;
    let (shutdown, worker) = run_worker(settings(&db, &broker, None)).await;
    // 254.98 EUR.
    let order = captured(&db, "shopify", "orders/create", &shopify_order(6001)).await;
    eventually(Duration::from_secs(30), "the order is stored", || async {
        event_state(&db, order).await.0 == "processed"
    })
    .await;
    let order_id = order_id_for(&db, 6001).await.unwrap();

    for (amount, currency, reason) in [
        (
            500,
            "eur",
            "amount 500 EUR does not match the order's total 25498 EUR",
        ),
        (
            25_498,
            "usd",
            "amount 25498 USD does not match the order's total 25498 EUR",
        ),
    ] {
        let event = captured(
            &db,
            "stripe",
            "payment_intent.succeeded",
            &payment(order_id, amount, currency),
        )
        .await;
        eventually(
            Duration::from_secs(30),
            "the payment event ends",
            || async { event_state(&db, event).await.0 != "received" },
        )
        .await;
        let (status, attempts, last_error, _) = event_state(&db, event).await;
        // Permanent: one attempt, no retry.
        assert_eq!((status.as_str(), attempts), ("failed", 1), "{last_error:?}");
        let last_error = last_error.unwrap();
        assert!(last_error.contains(reason), "{last_error}");
        assert!(last_error.contains(&order_id.to_string()), "{last_error}");
        assert_eq!(stored_status(&db, order_id).await, OrderStatus::Pending);
    }
    assert_eq!(outbox_count(&db, "order.updated").await, 0);

    // The right amount, in Stripe's lowercase currency, pays it.
    let paid = captured(
        &db,
        "stripe",
        "payment_intent.succeeded",
        &payment(order_id, 25_498, "eur"),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the payment is applied",
        || async { event_state(&db, paid).await.0 == "processed" },
    )
    .await;
    assert_eq!(stored_status(&db, order_id).await, OrderStatus::Paid);

    shutdown.cancel();
    worker.await.unwrap();
    broker.cleanup().await;
}

/// `(total_cents, customer_email)` of the stored Shopify order `id`.
async fn stored(db: &TestDatabase, id: u64) -> (i64, Option<String>) {
    let order_id = order_id_for(db, id).await.unwrap();
    let client = db.pool().get().await.unwrap();
    let order = keel_commerce::orders::get(&client, order_id, Scope::All)
        .await
        .unwrap();
    (order.total_cents, order.customer_email)
}

#[tokio::test]
async fn an_older_shopify_update_delivered_after_a_newer_one_changes_nothing_and_says_why() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let create = shopify_version(77, "10.00", "a@example.com", "2026-01-01T10:00:00Z");
    let newer = shopify_version(77, "30.00", "c@example.com", "2026-01-01T12:00:00Z");
    // Shopify writes offsets; the same instant as 11:00Z.
    let older = shopify_version(77, "20.00", "b@example.com", "2026-01-01T06:00:00-05:00");

    for (topic, body) in [("orders/create", &create), ("orders/updated", &newer)] {
        let event = captured(&db, "shopify", topic, body).await;
        assert_eq!(handler.process(event).await.unwrap(), JobEnd::Processed);
    }
    // Each arrives under a fresh delivery id: a late retry, an admin's
    // replay, or a captured body re-sent.
    let late = captured(&db, "shopify", "orders/updated", &older).await;
    let end = handler.process(late).await.unwrap();

    assert_eq!(end, JobEnd::Ignored);
    assert_eq!(stored(&db, 77).await, (3_000, Some("c@example.com".into())));
    let (status, attempts, reason, processed_at) = event_state(&db, late).await;
    assert_eq!(
        (status.as_str(), attempts, processed_at),
        ("ignored", 1, true)
    );
    let reason = reason.unwrap();
    assert!(
        reason.contains("2026-01-01T11:00:00Z") && reason.contains("2026-01-01T12:00:00Z"),
        "{reason}"
    );
    // The newer body itself, once more: the same version, nothing to do.
    let again = captured(&db, "shopify", "orders/updated", &newer).await;
    assert_eq!(handler.process(again).await.unwrap(), JobEnd::Ignored);
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    assert_eq!(outbox_count(&db, "order.updated").await, 1);
    broker.cleanup().await;
}

#[tokio::test]
async fn orders_create_arriving_after_orders_updated_does_not_overwrite_it() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let create = shopify_version(78, "10.00", "a@example.com", "2026-01-01T10:00:00Z");
    let updated = shopify_version(78, "30.00", "c@example.com", "2026-01-01T10:00:05Z");

    let first = captured(&db, "shopify", "orders/updated", &updated).await;
    assert_eq!(handler.process(first).await.unwrap(), JobEnd::Processed);
    let late = captured(&db, "shopify", "orders/create", &create).await;
    assert_eq!(handler.process(late).await.unwrap(), JobEnd::Ignored);

    assert_eq!(stored(&db, 78).await, (3_000, Some("c@example.com".into())));
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    assert_eq!(outbox_count(&db, "order.updated").await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn concurrent_shopify_versions_of_one_order_leave_the_newest_whatever_order_they_commit_in() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handlers: Vec<_> = (0..4).map(|_| handler(&db, &settings)).collect();
    let mut events = Vec::new();
    for minute in 0..12 {
        let body = shopify_version(
            79,
            &format!("{}.00", 10 + minute),
            "a@example.com",
            &format!("2026-01-01T10:{minute:02}:00Z"),
        );
        events.push(captured(&db, "shopify", "orders/updated", &body).await);
    }
    // Newest first, spread over four handlers at once.
    events.reverse();
    let runs = events.iter().enumerate().map(|(i, event)| {
        let handler = handlers[i % handlers.len()].clone();
        let event = *event;
        async move { handler.process(event).await.unwrap() }
    });
    futures::future::join_all(runs).await;

    assert_eq!(stored(&db, 79).await.0, 2_100);
    broker.cleanup().await;
}

/// A Shopify order body with its `updated_at` (the order's version).
fn shopify_version(id: u64, total: &str, email: &str, updated_at: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "email": email,
        "currency": "EUR",
        "total_price": total,
        "created_at": "2026-01-01T10:00:00Z",
        "updated_at": updated_at,
        "line_items": [{"id": 1, "sku": "LAMP-1", "quantity": 1, "price": total}]
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_stale_stripe_event_after_a_newer_change_changes_nothing_and_says_why() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let order = captured(&db, "shopify", "orders/create", &shopify_order(6101)).await;
    assert_eq!(handler.process(order).await.unwrap(), JobEnd::Processed);
    let order_id = order_id_for(&db, 6101).await.unwrap();
    // Stripe's event, with its version (`created`, Unix seconds).
    let mut confirmation: serde_json::Value =
        serde_json::from_slice(&payment(order_id, 25_498, "eur")).unwrap();
    confirmation["created"] = serde_json::json!(1_767_261_600); // 2026-01-01T10:00:00Z
    let confirmation = confirmation.to_string().into_bytes();
    let paid = captured(&db, "stripe", "payment_intent.succeeded", &confirmation).await;
    assert_eq!(handler.process(paid).await.unwrap(), JobEnd::Processed);
    // The order moves on: an admin cancels it (the refund is theirs).
    let mut client = db.pool().get().await.unwrap();
    keel_commerce::orders::cancel(&mut client, order_id, Scope::All)
        .await
        .unwrap();
    let updates = outbox_count(&db, "order.updated").await;

    // The same confirmation again, under a fresh delivery id (a captured
    // body re-sent, an admin's replay): not newer than what paid the order.
    let late = captured(&db, "stripe", "payment_intent.succeeded", &confirmation).await;
    assert_eq!(handler.process(late).await.unwrap(), JobEnd::Ignored);

    assert_eq!(stored_status(&db, order_id).await, OrderStatus::Cancelled);
    assert_eq!(outbox_count(&db, "order.updated").await, updates);
    let (status, attempts, reason, processed_at) = event_state(&db, late).await;
    assert_eq!(
        (status.as_str(), attempts, processed_at),
        ("ignored", 1, true)
    );
    let reason = reason.unwrap();
    assert!(reason.contains("created 2026-01-01T10:00:00Z"), "{reason}");
    broker.cleanup().await;
}
