//! Orders the worker writes (from webhooks) as the gateway serves them: to
//! an admin, with their fulfilment status, and never stale from the cache
//! once the worker has announced its change.
//!
//! The worker's announcement is reproduced here byte for byte (the
//! version-guarded write-through and the `inv:` message of
//! `services/worker/src/order_cache.rs`): services do not import each
//! other, so each side pins the wire format with a test of its own.

use std::time::Duration;

use keel_store::domain::{
    Currency, ExternalId, ExternalOrder, FulfillmentStatus, NewItem, Order, Quantity, Sku, Source,
    TotalCents, UnitPriceCents,
};
use keel_store::orders;
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

/// What the worker does after committing a change to `order`.
async fn announce_as_the_worker_does(env: &OrdersEnv, order: &Order) {
    let client = redis::Client::open(env.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = env.redis.prefix();
    let _: i64 = redis::Script::new(
        r"
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
    .key(format!("{prefix}order:{}", order.id))
    .arg(order.updated_at.timestamp_micros())
    .arg(serde_json::to_vec(order).unwrap())
    .arg(300_000)
    .invoke_async(&mut conn)
    .await
    .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}orders:invalidate"))
        .arg(format!("inv:worker-test:0:{}", order.id))
        .query_async(&mut conn)
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
    let env = OrdersEnv::new().await;
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
    // ...is not what the caches hold (this is what the announcement fixes)...
    assert_eq!(fulfillment_seen(&a, &id_text).await, "pending");

    // ...until the worker announces it.
    announce_as_the_worker_does(&env, &changed.order).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for app in [&a, &b] {
        while fulfillment_seen(app, &id_text).await != "fulfilled" {
            assert!(tokio::time::Instant::now() < deadline, "still stale");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // And an older version written late (a fill that raced) cannot bury it.
    announce_as_the_worker_does(&env, &created.order).await;
    for app in [&a, &b] {
        assert_eq!(fulfillment_seen(app, &id_text).await, "fulfilled");
    }
}
