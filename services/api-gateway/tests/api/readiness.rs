//! `/readyz` turns 503 naming a dependency the moment it becomes
//! unreachable, and back to 200 once it returns, without a restart.

use std::time::Duration;

use crate::helpers::{TestApp, spawn_app_behind_proxies};

async fn readiness(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Polls `/readyz` until `accept` holds, for up to `within`.
async fn wait_for(
    app: &TestApp,
    within: Duration,
    accept: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = readiness(app).await;
        if accept(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn outage_is_reported_and_recovered(dependency: &str) {
    let app = spawn_app_behind_proxies().await;
    let (status, body) = wait_for(&app, Duration::from_secs(10), |s, _| s == 200).await;
    assert_eq!(status, 200, "ready before the outage: {body}");

    let proxies = app.proxies.as_ref().unwrap();
    let proxy = match dependency {
        "postgres" => &proxies.postgres,
        "redis" => &proxies.redis,
        "rabbitmq" => &proxies.rabbitmq,
        other => panic!("unknown dependency {other}"),
    };
    proxy.cut();
    let (status, body) = wait_for(&app, Duration::from_secs(15), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!([dependency]), "{body}");
    assert_eq!(body["checks"][dependency]["status"], "error");

    proxy.restore();
    let (status, body) = wait_for(&app, Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(status, 200, "recovered without a restart: {body}");
    app.stop().await;
}

#[tokio::test]
async fn losing_rabbitmq_turns_readyz_503_naming_it_until_it_returns() {
    outage_is_reported_and_recovered("rabbitmq").await;
}

#[tokio::test]
async fn losing_redis_turns_readyz_503_naming_it_until_it_returns() {
    outage_is_reported_and_recovered("redis").await;
}

#[tokio::test]
async fn losing_postgres_turns_readyz_503_naming_it_until_it_returns() {
    outage_is_reported_and_recovered("postgres").await;
}
