//! One event at a time, through the handler directly: what each source and
//! topic does to orders, the outbox and the event.

use std::time::Duration;

use keel_commerce::orders::domain::{OrderStatus, Scope};
use keel_testkit::broker::TestBroker;
use worker::webhooks::error::ProcessingError;
use worker::webhooks::shopify::ShopifyApi;
use worker::webhooks::{JobEnd, WebhookHandler, WebhookMetrics};

use crate::support::*;

/// The handler as the worker builds it.
fn handler(
    db: &keel_testkit::database::TestDatabase,
    settings: &worker::settings::Settings,
) -> WebhookHandler {
    WebhookHandler::new(
        db.pool().clone(),
        keel_outbox::RelayWaker::new(db.pool().clone()),
        &settings.webhooks,
        ShopifyApi::from_settings(&settings.shopify).unwrap(),
        settings.amqp.retry.max_attempts(),
        WebhookMetrics::default(),
    )
}

#[tokio::test]
async fn a_shopify_order_becomes_an_order_with_the_fulfilment_status_its_api_reports() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let shopify = FakeShopify::start(Answer::Fulfillments {
        statuses: vec!["cancelled", "success"],
        delay: Duration::ZERO,
    })
    .await;
    let settings = settings(&db, &broker, Some(&shopify.url));
    let event = captured(
        &db,
        "shopify",
        "orders/create",
        &shopify_order(820982911946154508),
    )
    .await;

    let end = handler(&db, &settings).process(event).await.unwrap();

    assert_eq!(end, JobEnd::Processed);
    let id = order_id_for(&db, 820982911946154508)
        .await
        .expect("order stored");
    let client = db.pool().get().await.unwrap();
    let order = keel_commerce::orders::get(&client, id, Scope::All)
        .await
        .unwrap();
    assert_eq!(order.source, "webhook:shopify");
    assert_eq!(order.external_id.as_deref(), Some("820982911946154508"));
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.total_cents, 25_498);
    assert_eq!(order.items.len(), 2);
    assert_eq!(order.items[1].sku, "CASE-01");
    assert_eq!(order.items[1].unit_price_cents, 2_499);
    assert_eq!(order.customer_email.as_deref(), Some("jon@example.com"));
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.fulfillment_status.as_deref(), Some("fulfilled"));
    assert_eq!(shopify.hits(), 1);
    // One creation, one update (the fulfilment), one receipt from capture.
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    assert_eq!(outbox_count(&db, "order.updated").await, 1);
    assert_eq!(outbox_count(&db, "webhook.received").await, 1);
    let (status, attempts, last_error, processed_at) = event_state(&db, event).await;
    assert_eq!(
        (status.as_str(), attempts, last_error),
        ("processed", 1, None)
    );
    assert!(processed_at);
    shopify.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn orders_updated_changes_the_order_and_an_identical_update_changes_nothing() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let created = captured(&db, "shopify", "orders/create", &shopify_order(42)).await;
    handler.process(created).await.unwrap();

    let mut body: serde_json::Value = serde_json::from_slice(&shopify_order(42)).unwrap();
    body["total_price"] = "300.00".into();
    body["line_items"][0]["quantity"] = 2.into();
    let body = serde_json::to_vec(&body).unwrap();
    let updated = captured(&db, "shopify", "orders/updated", &body).await;
    handler.process(updated).await.unwrap();
    // Shopify sends orders/updated for changes Keel does not keep, too.
    let same = captured(&db, "shopify", "orders/updated", &body).await;
    assert_eq!(handler.process(same).await.unwrap(), JobEnd::Processed);

    let id = order_id_for(&db, 42).await.unwrap();
    let client = db.pool().get().await.unwrap();
    let order = keel_commerce::orders::get(&client, id, Scope::All)
        .await
        .unwrap();
    assert_eq!(order.total_cents, 30_000);
    assert_eq!(order.items[0].quantity, 2);
    // No fulfilment lookup without a configured API.
    assert_eq!(order.fulfillment_status, None);
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    assert_eq!(outbox_count(&db, "order.updated").await, 1);
    broker.cleanup().await;
}

#[tokio::test]
async fn a_stripe_payment_marks_the_referenced_order_paid_once() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let order = captured(&db, "shopify", "orders/create", &shopify_order(7)).await;
    handler.process(order).await.unwrap();
    let order_id = order_id_for(&db, 7).await.unwrap();
    let payment = |event: &str| {
        serde_json::json!({
            "id": event, "object": "event", "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "object": "payment_intent",
                "amount": 25498, "amount_received": 25498, "currency": "eur", "status": "succeeded",
                "metadata": {"order_id": order_id.to_string()}}}
        })
        .to_string()
        .into_bytes()
    };

    let paid = captured(&db, "stripe", "payment_intent.succeeded", &payment("evt_1")).await;
    assert_eq!(handler.process(paid).await.unwrap(), JobEnd::Processed);
    // The same confirmation as another Stripe event: nothing more happens.
    let again = captured(&db, "stripe", "payment_intent.succeeded", &payment("evt_2")).await;
    assert_eq!(handler.process(again).await.unwrap(), JobEnd::Processed);

    let client = db.pool().get().await.unwrap();
    let order = keel_commerce::orders::get(&client, order_id, Scope::All)
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(outbox_count(&db, "order.updated").await, 1);
    broker.cleanup().await;
}

#[tokio::test]
async fn a_payment_for_an_unknown_order_is_a_permanent_failure() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let body = serde_json::json!({
        "type": "payment_intent.succeeded",
        "data": {"object": {"amount_received": 100, "currency": "eur",
            "metadata": {"order_id": uuid::Uuid::now_v7().to_string()}}}
    })
    .to_string();
    let event = captured(&db, "stripe", "payment_intent.succeeded", body.as_bytes()).await;

    let error = handler(&db, &settings).process(event).await.unwrap_err();

    assert!(matches!(error, ProcessingError::Payment { .. }), "{error}");
    assert!(!error.is_transient());
    broker.cleanup().await;
}

#[tokio::test]
async fn github_events_and_unknown_topics_are_stored_and_ignored() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let push = captured(&db, "github", "push", br#"{"ref":"refs/heads/main"}"#).await;
    let refund = captured(
        &db,
        "stripe",
        "charge.refunded",
        br#"{"type":"charge.refunded"}"#,
    )
    .await;
    let shop = captured(&db, "shopify", "products/create", br#"{"id":1}"#).await;

    for event in [push, refund, shop] {
        assert_eq!(handler.process(event).await.unwrap(), JobEnd::Ignored);
        let (status, attempts, _, processed_at) = event_state(&db, event).await;
        assert_eq!(
            (status.as_str(), attempts, processed_at),
            ("ignored", 1, true)
        );
    }
    assert_eq!(outbox_count(&db, "order.created").await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_job_is_skipped_without_a_second_effect() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let handler = handler(&db, &settings);
    let event = captured(&db, "shopify", "orders/create", &shopify_order(99)).await;

    assert_eq!(handler.process(event).await.unwrap(), JobEnd::Processed);
    assert_eq!(handler.process(event).await.unwrap(), JobEnd::Skipped);

    assert_eq!(outbox_count(&db, "order.created").await, 1);
    let (status, attempts, _, _) = event_state(&db, event).await;
    assert_eq!((status.as_str(), attempts), ("processed", 1));
    broker.cleanup().await;
}

#[tokio::test]
async fn two_handlers_on_one_event_apply_it_once() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let (a, b) = (handler(&db, &settings), handler(&db, &settings));
    let event = captured(&db, "shopify", "orders/create", &shopify_order(5)).await;

    let (first, second) = tokio::join!(a.process(event), b.process(event));

    let mut ends = [first.unwrap(), second.unwrap()];
    ends.sort_by_key(|end| *end == JobEnd::Skipped);
    assert_eq!(ends, [JobEnd::Processed, JobEnd::Skipped]);
    assert_eq!(outbox_count(&db, "order.created").await, 1);
    broker.cleanup().await;
}

#[tokio::test]
async fn an_invalid_payload_is_permanent_and_names_the_field() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let settings = settings(&db, &broker, None);
    let mut body: serde_json::Value = serde_json::from_slice(&shopify_order(3)).unwrap();
    body["currency"] = "euro".into();
    let event = captured(
        &db,
        "shopify",
        "orders/create",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;

    let error = handler(&db, &settings).process(event).await.unwrap_err();

    assert!(!error.is_transient());
    assert!(error.to_string().contains("currency"), "{error}");
    broker.cleanup().await;
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_in_the_job() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let shopify = FakeShopify::start(Answer::RateLimitedOnce { retry_after: "0.3" }).await;
    let settings = settings(&db, &broker, Some(&shopify.url));
    let event = captured(&db, "shopify", "orders/create", &shopify_order(429)).await;
    let started = std::time::Instant::now();

    let end = handler(&db, &settings).process(event).await.unwrap();

    assert_eq!(end, JobEnd::Processed);
    assert_eq!(shopify.hits(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let id = order_id_for(&db, 429).await.unwrap();
    let client = db.pool().get().await.unwrap();
    let order = keel_commerce::orders::get(&client, id, Scope::All)
        .await
        .unwrap();
    assert_eq!(order.fulfillment_status.as_deref(), Some("fulfilled"));
    shopify.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_long_retry_after_fails_the_attempt_and_holds_back_calls_until_it_passes() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let shopify = FakeShopify::start(Answer::RateLimitedOnce { retry_after: "60" }).await;
    let settings = settings(&db, &broker, Some(&shopify.url));
    let handler = handler(&db, &settings);
    let event = captured(&db, "shopify", "orders/create", &shopify_order(430)).await;

    let first = handler.process(event).await.unwrap_err();
    // The next attempt, before the minute is over, does not call at all.
    let second = handler.process(event).await.unwrap_err();

    assert!(first.is_transient(), "{first}");
    assert!(first.to_string().contains("429"), "{first}");
    assert!(second.is_transient(), "{second}");
    assert!(second.to_string().contains("holding off"), "{second}");
    assert_eq!(shopify.hits(), 1);
    assert_eq!(order_id_for(&db, 430).await, None);
    shopify.stop().await;
    broker.cleanup().await;
}
