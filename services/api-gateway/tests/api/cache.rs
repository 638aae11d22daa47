//! The read-through order cache: no stale reads after a write, whichever
//! instance serves them; hits and misses are counted.

use keel_testkit::proxy::TcpProxy;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::orders_support::{As, OrdersEnv};

#[tokio::test]
async fn no_instance_serves_a_stale_order_after_a_write_through_another() {
    let env = OrdersEnv::new().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let me = As::customer();
    // Payment and fulfilment are an admin's (or a webhook's) to record.
    let ops = As::admin();
    let order = a.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    // Warm both levels on both instances.
    for app in [&a, &b, &a, &b] {
        assert_eq!(app.get(me, id).await.status(), 200);
    }

    for (writer, reader, status) in [(&a, &b, "paid"), (&b, &a, "fulfilled")] {
        let response = writer.patch_status(ops, id, status).await;
        assert_eq!(response.status(), 200);
        // The very next read, on the other instance, sees the write.
        let seen: Value = reader.get(me, id).await.json().await.unwrap();
        assert_eq!(seen["status"], status, "read through the other instance");
        let seen: Value = writer.get(me, id).await.json().await.unwrap();
        assert_eq!(seen["status"], status, "read through the writing instance");
    }

    assert_eq!(b.cancel(me, id).await.status(), 409);
}

#[tokio::test]
async fn a_cancel_through_one_instance_is_seen_through_the_other_at_once() {
    let env = OrdersEnv::new().await;
    let (a, b) = (env.spawn().await, env.spawn().await);
    let me = As::customer();
    for _ in 0..20 {
        let order = a.create_ok(me).await;
        let id = order["id"].as_str().unwrap();
        assert_eq!(b.get(me, id).await.status(), 200);
        assert_eq!(a.cancel(me, id).await.status(), 204);
        let seen: Value = b.get(me, id).await.json().await.unwrap();
        assert_eq!(seen["status"], "cancelled");
    }
}

#[tokio::test]
async fn cached_reads_are_counted_by_level() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let other = env.spawn().await;
    let me = As::customer();
    let order = app.create_ok(me).await;
    let id = order["id"].as_str().unwrap();

    // The writer cached it in Redis; the other instance finds it there,
    // then in memory.
    other.get(me, id).await;
    other.get(me, id).await;

    let metrics = other
        .client
        .get(format!("{}/metrics", other.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |level: &str, result: &str| -> f64 {
        let prefix =
            format!("orders_cache_lookups_total{{level=\"{level}\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("local", "miss"), 1.0);
    assert_eq!(value("redis", "hit"), 1.0);
    assert_eq!(value("local", "hit"), 1.0);
    assert_eq!(value("redis", "miss"), 0.0);
}

#[tokio::test]
async fn while_redis_is_away_reads_come_from_postgres_and_memory_is_not_trusted() {
    let env = OrdersEnv::new().await;
    let redis_url = url::Url::parse(env.redis.url()).unwrap();
    let upstream = format!(
        "{}:{}",
        redis_url.host_str().unwrap(),
        redis_url.port().unwrap()
    );
    let proxy = TcpProxy::start(upstream.parse().unwrap()).await;
    let a = env
        .spawn_with(|s| {
            let mut url = url::Url::parse(s.redis.url.expose_secret()).unwrap();
            url.set_port(Some(proxy.addr().port())).unwrap();
            s.redis.url = SecretString::from(url.to_string());
        })
        .await;
    let b = env.spawn().await;
    let me = As::customer();
    let ops = As::admin();
    let order = a.create_ok(me).await;
    let id = order["id"].as_str().unwrap();
    // Cached in A's memory.
    assert_eq!(a.get(me, id).await.status(), 200);
    assert_eq!(a.get(me, id).await.status(), 200);

    proxy.cut();
    a.wait_cache_live(false).await;
    // A cannot hear this write's invalidation...
    assert_eq!(b.patch_status(ops, id, "paid").await.status(), 200);
    // ...so it must not answer from memory: PostgreSQL has the truth.
    let seen: Value = a.get(me, id).await.json().await.unwrap();
    assert_eq!(seen["status"], "paid");
    // Writes through A still commit without Redis.
    assert_eq!(a.patch_status(ops, id, "fulfilled").await.status(), 200);

    proxy.restore();
    a.wait_cache_live(true).await;
    for app in [&a, &b, &a] {
        let seen: Value = app.get(me, id).await.json().await.unwrap();
        assert_eq!(seen["status"], "fulfilled");
    }
}
