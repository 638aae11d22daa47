//! GCRA rate limiting in Redis: headers, 429 + Retry-After, recovery,
//! per-user budgets, and failing open when Redis is unreachable.

use std::time::Duration;

use api_gateway::edge::rate_limit::ClassLimit;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{spawn_app_behind_proxies_with, spawn_app_with};

const PUBLIC: &str = "/api/v1/openapi.json";

fn tight(settings: &mut api_gateway::settings::Settings) {
    settings.rate_limit.classes.insert(
        "read".into(),
        ClassLimit {
            limit: 3,
            period: Duration::from_secs(2),
        },
    );
}

fn header(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_retry_after_then_recover() {
    let app = spawn_app_with(tight).await;
    for remaining in [2, 1, 0] {
        let response = app.get(PUBLIC).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), 3);
        assert_eq!(header(&response, "ratelimit-remaining"), remaining);
        assert!(header(&response, "ratelimit-reset") <= 2);
    }
    let refused = app.get(PUBLIC).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let retry_after = header(&refused, "retry-after");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:rate-limited");

    // One emission interval (2 s / 3) later there is room for one more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(app.get(PUBLIC).await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("rate_limited_requests_total{class=\"read\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn authenticated_callers_have_their_own_budget() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        tight(s);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get(PUBLIC).await.status(), 200);
    }
    assert_eq!(app.get(PUBLIC).await.status(), 429);
    // Same address, but a user: a separate budget.
    let (_, token) = upstream.customer_token();
    let response = app
        .client
        .get(format!("{}/api/v1/analytics/summary", app.address))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "ratelimit-remaining"), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_limiter_fails_open_when_redis_is_unreachable_and_counts_it() {
    let app = spawn_app_behind_proxies_with(tight).await;
    assert_eq!(app.get(PUBLIC).await.status(), 200);
    app.proxies.as_ref().unwrap().redis.cut();
    for _ in 0..6 {
        let started = std::time::Instant::now();
        let response = app.get(PUBLIC).await;
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("ratelimit-limit"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("keel_rate_limiter_redis_failures_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 6, "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_hot_client_reserving_in_batches_never_exceeds_its_limit() {
    let app = spawn_app_with(|s| {
        s.rate_limit.classes.insert(
            "read".into(),
            ClassLimit {
                limit: 200,
                period: Duration::from_secs(60),
            },
        );
    })
    .await;
    let started = std::time::Instant::now();
    let mut passed = 0;
    for _ in 0..260 {
        match app.get(PUBLIC).await.status().as_u16() {
            200 => passed += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // Reservations are paid for in Redis before they are spent: never more
    // than the limit plus what GCRA refilled meanwhile (one per 300 ms),
    // and only a reservation's worth less.
    let refilled = (started.elapsed().as_millis() / 300) as u32 + 1;
    assert!(
        passed <= 200 + refilled,
        "{passed} passed, {refilled} refilled"
    );
    assert!(passed >= 180, "{passed} passed");
    app.stop().await;
}

/// Behind an ingress every request arrives from the ingress: anonymous
/// clients are told apart by what a trusted proxy forwarded, and a client
/// that is not a trusted proxy cannot pick a fresh bucket with the header.
#[tokio::test]
async fn anonymous_budgets_follow_the_client_a_trusted_proxy_forwards() {
    let send = |app: &crate::helpers::TestApp, forwarded: &'static str| {
        app.client
            .get(format!("{}{PUBLIC}", app.address))
            .header("X-Forwarded-For", forwarded)
            .send()
    };

    let behind_ingress = spawn_app_with(|s| {
        tight(s);
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(&behind_ingress, "198.51.100.1")
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        send(&behind_ingress, "198.51.100.1")
            .await
            .unwrap()
            .status(),
        429
    );
    // Another client behind the same ingress has its own budget.
    assert_eq!(
        send(&behind_ingress, "198.51.100.2")
            .await
            .unwrap()
            .status(),
        200
    );
    behind_ingress.stop().await;

    let at_the_edge = spawn_app_with(tight).await;
    for _ in 0..3 {
        assert_eq!(
            send(&at_the_edge, "198.51.100.1").await.unwrap().status(),
            200
        );
    }
    // Not a trusted proxy: the header changes nothing, the peer is limited.
    assert_eq!(
        send(&at_the_edge, "198.51.100.2").await.unwrap().status(),
        429
    );
    at_the_edge.stop().await;
}
