//! How soon a webhook's change shows through the gateway's cached
//! `GET /orders/{id}`, with the four services as separate processes.
//!
//! The gateway caches orders in memory and in Redis (ADR 0009); the worker
//! applies webhooks. The order is read once (cached), then changed by
//! signed Shopify `orders/updated` webhooks, one at a time; after each, the
//! test polls PostgreSQL until the worker has committed the new total, then
//! the cached `GET` until it shows it. It prints both latencies (from the
//! webhook's acceptance): the commit is the floor any cache protocol starts
//! from, under the same load. It fails if a change takes longer than
//! [`WITHIN`] to show. The figures are in `docs/benchmarks.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keel_e2e::Stack;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const SHOPIFY_SECRET: &str = "e2e-shopify-secret";
const ADMIN_EMAIL: &str = "ops@e2e.example";
const ADMIN_PASSWORD: &str = "correct horse battery staple e2e";
const SHOPIFY_ID: i64 = 820_982_911_946_154_508;
/// Changes measured.
const UPDATES: usize = 20;
/// The bound on one change's latency the test asserts.
const WITHIN: Duration = Duration::from_secs(2);

async fn admin_token(client: &Client, stack: &Stack) -> String {
    let response = client
        .post(stack.gateway("/api/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", stack.log_tails());
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Delivers a signed Shopify order webhook whose total is `cents` / 100.
async fn deliver(client: &Client, stack: &Stack, topic: &str, version: usize, cents: i64) {
    let body = json!({
        "id": SHOPIFY_ID,
        "email": "shopper@e2e.example",
        "currency": "EUR",
        "total_price": format!("{}.{:02}", cents / 100, cents % 100),
        "updated_at": format!("2026-01-01T00:{:02}:{:02}Z", version / 60, version % 60),
        "line_items": [{"id": 866_550_311_766_439_020_i64, "sku": "LAMP-7", "quantity": 1, "price": format!("{}.{:02}", cents / 100, cents % 100)}],
    })
    .to_string();
    let response = client
        .post(stack.gateway("/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
        .header(
            "X-Shopify-Hmac-Sha256",
            keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", stack.log_tails());
}

async fn total_seen(client: &Client, url: &str, token: &str) -> Option<i64> {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    if response.status() != StatusCode::OK {
        return None;
    }
    response.json::<Value>().await.unwrap()["total_cents"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_change_shows_through_the_cached_order_within_two_seconds() {
    let stack = Stack::start(&[
        ("KEEL_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("KEEL_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("KEEL_WEBHOOK_SECRET_SHOPIFY", SHOPIFY_SECRET.to_owned()),
        ("KEEL_RATE_LIMIT__ENABLED", "false".to_owned()),
    ])
    .await;
    let client = Client::new();
    let admin = admin_token(&client, &stack).await;

    deliver(&client, &stack, "orders/create", 0, 10_000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let page: Value = client
            .get(stack.gateway("/api/v1/orders?limit=10"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = page["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|o| o["source"] == "webhook:shopify")
                .and_then(|o| o["id"].as_str().map(str::to_owned))
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the order never appeared\n{}",
            stack.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = stack.gateway(&format!("/api/v1/orders/{id}"));
    let db = stack.database().pool().get().await.unwrap();
    let committed = async |cents: i64| {
        let row = db
            .query_one("SELECT total_cents FROM orders WHERE id::text = $1", &[&id])
            .await
            .unwrap();
        row.get::<_, i64>(0) == cents
    };

    let mut commits = Vec::with_capacity(UPDATES);
    let mut latencies = Vec::with_capacity(UPDATES);
    for version in 1..=UPDATES {
        // Cached: read twice (the first read may be the fill).
        let before = total_seen(&client, &url, &admin).await;
        assert_eq!(before, total_seen(&client, &url, &admin).await);
        let cents = 10_000 + i64::try_from(version).unwrap() * 100;
        deliver(&client, &stack, "orders/updated", version, cents).await;
        let sent = Instant::now();
        while !committed(cents).await {
            assert!(sent.elapsed() < WITHIN, "update {version} not committed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        commits.push(sent.elapsed());
        while total_seen(&client, &url, &admin).await != Some(cents) {
            assert!(
                sent.elapsed() < WITHIN,
                "update {version} not visible after {WITHIN:?}\n{}",
                stack.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(sent.elapsed());
    }
    commits.sort();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "webhook → worker's commit: {UPDATES} updates, p50 {:.1} ms, max {:.1} ms",
        ms(commits[UPDATES / 2]),
        ms(commits[UPDATES - 1])
    );
    println!(
        "webhook → cached GET: {UPDATES} updates, p50 {:.1} ms, max {:.1} ms",
        ms(latencies[UPDATES / 2]),
        ms(latencies[UPDATES - 1])
    );
    stack.stop().await;
}
