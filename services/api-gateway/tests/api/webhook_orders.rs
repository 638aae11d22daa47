//! Orders the worker writes (from webhooks) as the gateway serves them: to
//! an admin, with their fulfilment status, and never stale from the cache
//! once the change's `order.*` event has been published.
//!
//! The worker does not touch the gateway's cache (ADR 0009): its
//! transaction writes the event, its relay publishes it, and each gateway
//! instance refreshes its cache from the event. The event is published here
//! as the relay publishes it; `crates/e2e/tests/freshness.rs` measures the
//! whole path with the real processes.

use std::time::Duration;

use keel_commerce::orders;
use keel_commerce::orders::domain::{
    Currency, ExternalId, ExternalOrder, FulfillmentStatus, NewItem, Order, Quantity, Sku, Source,
    TotalCents, UnitPriceCents,
};
use keel_contracts::events::OrderUpdated;
use keel_contracts::{DomainEvent, Envelope};
use keel_messaging::Publisher;
use keel_testkit::proxy::TcpProxy;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::orders_support::{As, OrdersApp, OrdersEnv};

fn shopify_order() -> ExternalOrder {
    ExternalOrder {
        source: Source::Webhook("shopify".into()),
        external_id: ExternalId::parse("820982911946154508").unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        items: vec![NewItem {
            sku: Sku::parse("IPOD2008GREEN").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price_cents: UnitPriceCents::parse(19_999).unwrap(),
        }],
        total_cents: TotalCents::parse(25_498).unwrap(),
        customer_email: None,
    }
}

/// What follows the worker's commit of a change to `order`: its outbox
/// relay publishes the `order.updated` the transaction wrote on
/// `{ns}.events`, and every gateway instance hears it on its own queue.
async fn publish_as_the_relay_does(env: &OrdersEnv, order: &Order) {
    let broker = env.broker.as_ref().expect("an environment with a broker");
    let event = DomainEvent::OrderUpdated(OrderUpdated {
        order: order.snapshot(),
        previous_status: order.status.as_str().to_owned(),
    });
    Publisher::new(broker.broker("relay-test"))
        .publish_event(&Envelope::new(event))
        .await
        .unwrap();
}

async fn fulfillment_seen(app: &OrdersApp, id: &str) -> Value {
    let response = app.get(As::admin(), id).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["fulfillment_status"].clone()
}

#[tokio::test]
async fn a_webhook_order_is_served_to_admins_and_a_workers_change_replaces_every_cached_copy() {
    let env = OrdersEnv::with_broker().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let mut client = env.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let created = orders::upsert_external(&tx, &shopify_order())
        .await
        .unwrap();
    let id = created.order.id;
    orders::record_fulfillment(&tx, id, &FulfillmentStatus::parse("pending").unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id_text = id.to_string();

    let seen: Value = a.get(As::admin(), &id_text).await.json().await.unwrap();
    assert_eq!(seen["source"], "webhook:shopify");
    assert_eq!(seen["external_id"], "820982911946154508");
    assert_eq!(seen["total_cents"], 25_498);
    assert_eq!(seen["user_id"], Value::Null);
    assert_eq!(seen["fulfillment_status"], "pending");
    // Webhook orders belong to no customer.
    assert_eq!(a.get(As::customer(), &id_text).await.status(), 404);
    // Both instances hold it in memory and Redis holds it too.
    for app in [&a, &b, &a, &b] {
        assert_eq!(fulfillment_seen(app, &id_text).await, "pending");
    }

    // The worker's next change, committed...
    let tx = client.transaction().await.unwrap();
    let changed =
        orders::record_fulfillment(&tx, id, &FulfillmentStatus::parse("fulfilled").unwrap())
            .await
            .unwrap();
    tx.commit().await.unwrap();
    // ...is not what the caches hold (this is what the event fixes)...
    assert_eq!(fulfillment_seen(&a, &id_text).await, "pending");

    // ...until its event is published.
    publish_as_the_relay_does(&env, &changed.order).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for app in [&a, &b] {
        while fulfillment_seen(app, &id_text).await != "fulfilled" {
            assert!(tokio::time::Instant::now() < deadline, "still stale");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And an older version's event arriving late cannot bury it.
    publish_as_the_relay_does(&env, &created.order).await;
    for app in [&a, &b] {
        assert_eq!(fulfillment_seen(app, &id_text).await, "fulfilled");
    }
    // Redis holds the newest version (written through from PostgreSQL by
    // the instances that heard the events), with a TTL.
    let client = redis::Client::open(env.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}order:{id}", env.redis.prefix());
    let (version, body): (i64, Vec<u8>) = redis::cmd("HMGET")
        .arg(&key)
        .arg("v")
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(version, changed.order.updated_at.timestamp_micros());
    assert_eq!(
        serde_json::from_slice::<Order>(&body).unwrap(),
        changed.order
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "{ttl}");
}

#[tokio::test]
async fn an_instance_that_cannot_hear_order_events_does_not_answer_from_memory() {
    let env = OrdersEnv::with_broker().await;
    let amqp = url::Url::parse(env.settings().amqp.url.expose_secret()).unwrap();
    let proxy = TcpProxy::start(
        format!("{}:{}", amqp.host_str().unwrap(), amqp.port().unwrap())
            .parse()
            .unwrap(),
    )
    .await;
    // A hears events through the proxy; B directly.
    let a = env
        .spawn_with(|s| {
            let mut url = url::Url::parse(s.amqp.url.expose_secret()).unwrap();
            url.set_port(Some(proxy.addr().port())).unwrap();
            s.amqp.url = SecretString::from(url.to_string());
        })
        .await;
    let b = env.spawn().await;
    let mut client = env.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let id = orders::upsert_external(&tx, &shopify_order())
        .await
        .unwrap()
        .order
        .id;
    orders::record_fulfillment(&tx, id, &FulfillmentStatus::parse("pending").unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let id_text = id.to_string();
    // In A's memory and in Redis.
    for _ in 0..2 {
        assert_eq!(fulfillment_seen(&a, &id_text).await, "pending");
    }

    proxy.cut();
    a.wait_cache_live(false).await;
    // A change A cannot hear of: B refreshes Redis from its event...
    let tx = client.transaction().await.unwrap();
    let changed =
        orders::record_fulfillment(&tx, id, &FulfillmentStatus::parse("fulfilled").unwrap())
            .await
            .unwrap();
    tx.commit().await.unwrap();
    publish_as_the_relay_does(&env, &changed.order).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fulfillment_seen(&b, &id_text).await != "fulfilled" {
        assert!(tokio::time::Instant::now() < deadline, "B still stale");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and A, deaf, does not answer from its memory.
    assert_eq!(fulfillment_seen(&a, &id_text).await, "fulfilled");

    proxy.restore();
    a.wait_cache_live(true).await;
    for _ in 0..2 {
        assert_eq!(fulfillment_seen(&a, &id_text).await, "fulfilled");
    }
}
