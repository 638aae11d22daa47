//! `Idempotency-Key` on `POST /api/v1/orders`.

use reqwest::Method;
use serde_json::Value;

use crate::orders_support::{As, OrdersApp, OrdersEnv, outbox_events, sample_order};

async fn post_with_key(app: &OrdersApp, caller: As, key: &str, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/orders", caller)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn order_count(env: &OrdersEnv) -> i64 {
    let client = env.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_response() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();

    let first = post_with_key(&app, me, "key-1", &sample_order()).await;
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first_body = first.bytes().await.unwrap();

    let retry = post_with_key(&app, me, "key-1", &sample_order()).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["location"], first_location);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.bytes().await.unwrap(), first_body);

    assert_eq!(order_count(&env).await, 1);
    assert_eq!(outbox_events(env.pool(), "order.created").await.len(), 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_a_422() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    assert_eq!(
        post_with_key(&app, me, "key-2", &sample_order())
            .await
            .status(),
        201
    );

    let mut other = sample_order();
    other["currency"] = "USD".into();
    let reused = post_with_key(&app, me, "key-2", &other).await;

    assert_eq!(reused.status(), 422);
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:idempotency-key-reused");
    assert_eq!(order_count(&env).await, 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_user() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;

    let mine = post_with_key(&app, As::customer(), "shared", &sample_order()).await;
    let theirs = post_with_key(&app, As::customer(), "shared", &sample_order()).await;

    assert_eq!(mine.status(), 201);
    assert_eq!(theirs.status(), 201);
    assert!(!theirs.headers().contains_key("idempotent-replayed"));
    assert_eq!(order_count(&env).await, 2);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_order() {
    let env = OrdersEnv::new().await;
    // Two instances, so the requests really race on the database.
    let (a, b) = (env.spawn().await, env.spawn().await);
    let me = As::customer();
    let body = sample_order();

    let requests = (0..8).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        post_with_key(app, me, "race", &body)
    });
    let responses = futures::future::join_all(requests).await;

    let mut bodies = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        bodies.push(response.bytes().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every answer is the first one"
    );
    assert_eq!(order_count(&env).await, 1);
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let me = As::customer();
    let mut invalid = sample_order();
    invalid["currency"] = "XXX".into();

    assert_eq!(
        post_with_key(&app, me, "key-3", &invalid).await.status(),
        422
    );
    assert_eq!(
        post_with_key(&app, me, "key-3", &sample_order())
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn an_unusable_key_is_a_422_naming_the_header() {
    let env = OrdersEnv::new().await;
    let app = env.spawn().await;
    let key = "k".repeat(256);
    let response = post_with_key(&app, As::customer(), &key, &sample_order()).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
}
