//! Orders through the real gateway (`Application`, as `main` builds it):
//! real access tokens verified against a JWK Set over HTTP, the edge
//! middleware, the orders area as wired in `startup.rs`.

use keel_token::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_with};
use crate::orders_support::sample_order;

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("authorization", bearer(token));
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn orders_work_end_to_end_with_real_access_tokens() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let (_, alice) = upstream.customer_token();
    let (_, mallory) = upstream.customer_token();
    let admin = upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);

    let created = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/orders",
        &alice,
        Some(&sample_order()),
    )
    .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = created.json().await.unwrap();

    let mine = send(&app, reqwest::Method::GET, &location, &alice, None).await;
    assert_eq!(mine.status(), 200);
    assert!(mine.headers().contains_key("etag"));
    assert_eq!(mine.json::<Value>().await.unwrap(), order);

    let theirs = send(&app, reqwest::Method::GET, &location, &mallory, None).await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(
        send(&app, reqwest::Method::GET, &location, &admin, None)
            .await
            .status(),
        200
    );

    // Alice cannot pay by asking; an admin (or the payment webhook) can.
    let pay = serde_json::json!({"status": "paid"});
    let refused = send(&app, reqwest::Method::PATCH, &location, &alice, Some(&pay)).await;
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:forbidden");
    let paid = send(&app, reqwest::Method::PATCH, &location, &admin, Some(&pay)).await;
    assert_eq!(paid.status(), 200);
    let page: Value = send(&app, reqwest::Method::GET, "/api/v1/orders", &alice, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["status"], "paid");
    let empty: Value = send(&app, reqwest::Method::GET, "/api/v1/orders", &mallory, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["items"], serde_json::json!([]));

    assert_eq!(app.get("/api/v1/orders").await.status(), 401);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("keel_orders_cache_lookups_total{level=\"local\",result=\"hit\"}"),
        "{metrics}"
    );
    app.stop().await;
    upstream.stop().await;
}
