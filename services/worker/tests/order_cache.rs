//! The worker's announcement of a changed order, in the gateway's format
//! (`services/api-gateway/src/orders/cache.rs`; the gateway's side is
//! pinned by its `tests/api/webhook_orders.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use keel_cache::{Redis, RedisSettings};
use keel_store::domain::{Order, OrderStatus};
use keel_testkit::redis::TestRedis;
use secrecy::SecretString;
use uuid::Uuid;
use worker::order_cache::OrderCacheNotifier;

fn order(id: Uuid, micros: i64, fulfillment: &str) -> Order {
    let at = Utc.timestamp_micros(micros).unwrap();
    Order {
        id,
        external_id: Some("1001".into()),
        status: OrderStatus::Pending,
        currency: "EUR".into(),
        total_cents: 100,
        items: vec![],
        customer_email: None,
        user_id: None,
        source: "webhook:shopify".into(),
        fulfillment_status: Some(fulfillment.into()),
        created_at: at,
        updated_at: at,
    }
}

#[tokio::test]
async fn a_change_is_written_through_newest_version_first_and_broadcast_as_an_invalidation() {
    let test_redis = TestRedis::new();
    let redis = Redis::new(&RedisSettings {
        url: SecretString::from(test_redis.url().to_owned()),
        key_prefix: test_redis.prefix().to_owned(),
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let notifier = OrderCacheNotifier::new(redis, Duration::from_secs(60));
    let id = Uuid::now_v7();
    let client = redis::Client::open(test_redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}orders:invalidate", test_redis.prefix()))
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let newer = order(id, 2_000_000, "fulfilled");
    notifier.written(&newer).await;
    // A slower worker's older version arrives late.
    notifier.written(&order(id, 1_000_000, "pending")).await;

    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}order:{id}", test_redis.prefix());
    let (version, body): (i64, Vec<u8>) = redis::cmd("HMGET")
        .arg(&key)
        .arg("v")
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(version, 2_000_000);
    assert_eq!(serde_json::from_slice::<Order>(&body).unwrap(), newer);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        let payload: String = message.get_payload().unwrap();
        let parts: Vec<&str> = payload.splitn(4, ':').collect();
        assert_eq!(parts[0], "inv");
        assert!(parts[1].starts_with("worker-"), "{payload}");
        assert!(parts[2].parse::<u64>().is_ok(), "{payload}");
        assert_eq!(parts[3], id.to_string());
    }
}
