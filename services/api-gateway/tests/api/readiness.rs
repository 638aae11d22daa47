//! `/readyz` says whether this gateway can serve (ADR 0021). PostgreSQL,
//! which every request needs, turns it 503 naming it; RabbitMQ (the outbox
//! covers it) and Redis (the limiter, order cache and revocation lookups
//! fail open) leave it 200 and are reported as degraded, in the body and
//! in `keel_dependency_up`. Either way it recovers without a restart.

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_behind_proxies, spawn_app_behind_proxies_with};
use crate::webhooks_support::{Delivery, SCHEMES, configure, stored_events};

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

/// `keel_dependency_up{dependency="..."}` as `/metrics` shows it.
async fn dependency_up(app: &TestApp, dependency: &str) -> Option<i64> {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let series = format!("keel_dependency_up{{dependency=\"{dependency}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

async fn wait_until_ready(app: &TestApp) {
    let (status, body) = wait_for(app, Duration::from_secs(10), |s, b| {
        s == 200 && b["status"] == "ok"
    })
    .await;
    assert_eq!(status, 200, "ready before the outage: {body}");
    assert_eq!(body["status"], "ok", "{body}");
}

/// Cuts `dependency`, expects the gateway to stay routable with it
/// reported as degraded, then restores it and expects `ok` again.
async fn a_reported_outage_keeps_the_gateway_ready(app: &TestApp, dependency: &str) {
    let proxies = app.proxies.as_ref().unwrap();
    let proxy = match dependency {
        "redis" => &proxies.redis,
        "rabbitmq" => &proxies.rabbitmq,
        other => panic!("{other} is not a reported dependency"),
    };
    proxy.cut();
    let (status, body) = wait_for(app, Duration::from_secs(15), |_, b| {
        b["checks"][dependency]["status"] == "degraded"
    })
    .await;
    assert_eq!(status, 200, "still routable: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["degraded"], serde_json::json!([dependency]), "{body}");
    assert!(body.get("failing").is_none(), "{body}");
    assert_eq!(dependency_up(app, dependency).await, Some(0));
    assert_eq!(dependency_up(app, "postgres").await, Some(1));
}

async fn recovers(app: &TestApp, dependency: &str) {
    let (status, body) = wait_for(app, Duration::from_secs(30), |s, b| {
        s == 200 && b["status"] == "ok"
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "recovered without a restart: {body}");
    assert_eq!(dependency_up(app, dependency).await, Some(1));
}

#[tokio::test]
async fn the_gateway_stays_ready_and_accepts_webhooks_while_rabbitmq_is_down() {
    let app = spawn_app_behind_proxies_with(configure).await;
    wait_until_ready(&app).await;

    a_reported_outage_keeps_the_gateway_ready(&app, "rabbitmq").await;
    // What readiness claims, the gateway does: deliveries are stored (and
    // their events wait in the outbox) while the broker is away.
    for scheme in SCHEMES {
        let delivery = format!("evt_{}", Uuid::new_v4().simple());
        let response = Delivery::valid(scheme, &delivery).post(&app).await;
        assert_eq!(response.status(), StatusCode::OK, "{scheme:?}");
    }
    assert_eq!(stored_events(&app).await, 4);

    app.proxies.as_ref().unwrap().rabbitmq.restore();
    recovers(&app, "rabbitmq").await;
    app.stop().await;
}

#[tokio::test]
async fn the_gateway_stays_ready_and_serves_while_redis_is_down() {
    let app = spawn_app_behind_proxies_with(configure).await;
    wait_until_ready(&app).await;

    a_reported_outage_keeps_the_gateway_ready(&app, "redis").await;
    // The limiter fails open: a webhook still gets through.
    let delivery = format!("evt_{}", Uuid::new_v4().simple());
    let response = Delivery::valid(SCHEMES[0], &delivery).post(&app).await;
    assert_eq!(response.status(), StatusCode::OK);

    app.proxies.as_ref().unwrap().redis.restore();
    recovers(&app, "redis").await;
    app.stop().await;
}

#[tokio::test]
async fn redis_unroutes_the_gateway_when_its_limiter_is_set_to_fail_closed() {
    // Then every limited request needs Redis: it is required, not reported.
    let app = spawn_app_behind_proxies_with(|s| s.rate_limit.fail_open = false).await;
    wait_until_ready(&app).await;
    app.proxies.as_ref().unwrap().redis.cut();
    let (status, body) = wait_for(&app, Duration::from_secs(15), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["redis"]), "{body}");
    app.proxies.as_ref().unwrap().redis.restore();
    recovers(&app, "redis").await;
    app.stop().await;
}

#[tokio::test]
async fn losing_postgres_turns_readyz_503_naming_it_until_it_returns() {
    let app = spawn_app_behind_proxies().await;
    wait_until_ready(&app).await;

    let proxy = &app.proxies.as_ref().unwrap().postgres;
    proxy.cut();
    let (status, body) = wait_for(&app, Duration::from_secs(15), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["failing"], serde_json::json!(["postgres"]), "{body}");
    assert_eq!(body["checks"]["postgres"]["status"], "error");
    assert_eq!(dependency_up(&app, "postgres").await, Some(0));

    proxy.restore();
    recovers(&app, "postgres").await;
    app.stop().await;
}
