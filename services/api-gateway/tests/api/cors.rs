//! CORS for the configured frontend origins only.

use crate::helpers::spawn_app_with;

const FRONTEND: &str = "https://shop.example.com";

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/analytics/summary", app.address),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_allowed_with_credentials() {
    let app = spawn_app_with(|s| s.cors.allowed_origins = vec![FRONTEND.to_owned()]).await;
    let response = preflight(&app, FRONTEND).await;
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], FRONTEND);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("authorization")
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_preflight_from_another_origin_gets_no_cors_headers() {
    let app = spawn_app_with(|s| s.cors.allowed_origins = vec![FRONTEND.to_owned()]).await;
    let response = preflight(&app, "https://evil.example.net").await;
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_listed_origin_can_read_errors_and_the_exposed_headers() {
    let app = spawn_app_with(|s| s.cors.allowed_origins = vec![FRONTEND.to_owned()]).await;
    // A 401 must still carry CORS headers, or the page cannot read it.
    let response = app
        .client
        .get(format!("{}/api/v1/analytics/summary", app.address))
        .header("origin", FRONTEND)
        .header("authorization", "Bearer garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], FRONTEND);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let exposed = h["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "x-request-id",
        "etag",
        "location",
        "ratelimit-remaining",
        "retry-after",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    app.stop().await;
}
