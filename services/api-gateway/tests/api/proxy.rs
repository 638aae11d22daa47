//! The reverse proxy to auth and analytics, against a fake upstream over
//! real HTTP, and against upstreams that are down or silent.

use std::time::{Duration, Instant};

use crate::auth::closed_port;
use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::spawn_app_with;

#[tokio::test]
async fn the_auth_proxy_forwards_path_query_body_and_the_client_address_without_hop_by_hop_headers()
{
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login?next=%2Fhome", app.address))
        .header("content-type", "application/json")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "203.0.113.7")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(r#"{"email":"a@example.com","password":"pw"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "echo");
    assert!(response.headers().contains_key("x-request-id"));
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/v1/auth/login");
    assert_eq!(echo["query"], "next=%2Fhome");
    assert_eq!(echo["body"], r#"{"email":"a@example.com","password":"pw"}"#);
    let headers = &echo["headers"];
    assert!(headers.get("x-hop").is_none(), "{headers}");
    assert!(headers.get("proxy-authorization").is_none(), "{headers}");
    // The address the gateway computed replaces the client's own claim.
    assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(headers["forwarded"], serde_json::json!(["for=127.0.0.1"]));
    assert_eq!(headers["content-type"][0], "application/json");
    // The trace continues: same trace id, a new parent span.
    let traceparent = headers["traceparent"][0].as_str().unwrap();
    assert!(
        traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{traceparent}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_jwks_at_the_root_is_the_key_set_auth_published() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    let set: serde_json::Value = response.json().await.unwrap();
    assert_eq!(set["keys"][0]["kid"], "key-1");
    app.stop().await;
}

#[tokio::test]
async fn a_large_body_streams_through_and_one_over_the_limit_is_a_413_problem() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.http.body_limit = 64 * 1024;
    })
    .await;
    let within = "x".repeat(60 * 1024);
    let echo: serde_json::Value = app
        .client
        .post(format!("{}/api/v1/auth/register", app.address))
        .body(within.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["body"].as_str().unwrap().len(), within.len());

    let response = app
        .client
        .post(format!("{}/api/v1/auth/register", app.address))
        .body("x".repeat(65 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:payload-too-large");
    app.stop().await;
}

async fn assert_unavailable_quickly(response: reqwest::Response, started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:unavailable");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn the_auth_service_down_is_a_503_problem_within_the_timeout() {
    let app = spawn_app_with(|s| {
        s.upstreams.auth_url = format!("http://127.0.0.1:{}", closed_port())
            .parse()
            .unwrap();
    })
    .await;
    let started = Instant::now();
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&serde_json::json!({"email": "a@example.com", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_unavailable_quickly(response, started).await;
    app.stop().await;
}

#[tokio::test]
async fn the_analytics_service_down_is_a_503_problem_within_the_timeout() {
    let keys = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        keys.configure(s);
        s.upstreams.analytics_url = format!("http://127.0.0.1:{}", closed_port())
            .parse()
            .unwrap();
    })
    .await;
    let started = Instant::now();
    let response = app
        .client
        .get(format!("{}/api/v1/analytics/summary", app.address))
        .header("authorization", bearer(&keys.customer_token().1))
        .send()
        .await
        .unwrap();
    assert_unavailable_quickly(response, started).await;
    app.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_problem_after_the_request_timeout() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.upstreams.request_timeout = Duration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let response = app
        .client
        .get(format!("{}/api/v1/analytics/slow", app.address))
        .header("authorization", bearer(&upstream.customer_token().1))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:upstream-timeout");
    app.stop().await;
}
