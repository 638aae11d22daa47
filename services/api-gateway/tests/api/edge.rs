//! Conventions every response follows: security headers, problems for
//! 404 and 405 (413 is in `proxy.rs` and keel-http's own tests).

use crate::helpers::spawn_app;

fn assert_security_headers(response: &reqwest::Response) {
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(h.contains_key("cache-control"));
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/api/v1/openapi.json",
        "/api/v1/no-such-thing",
        "/nope",
    ] {
        let response = app.get(path).await;
        assert_security_headers(&response);
    }
    assert_eq!(
        app.get("/healthz").await.headers()["cache-control"],
        "no-store"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_api_path_is_a_404_problem() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/no-such-thing").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:not-found");
    assert!(body["request_id"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem_naming_the_allowed_ones() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/api/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_security_headers(&response);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:method-not-allowed");
    assert_eq!(body["status"], 405);
    app.stop().await;
}
